"""Dataset building (SPEC §5, §14 "Dataset" and "Balance" rows, §13 HOLD-negative gap)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perpbot.data.synth import synth_market
from perpbot.errors import InsufficientDataError
from perpbot.ml.dataset import (
    SOURCE_HOLD,
    SOURCE_SIGNAL,
    build_dataset,
    stratified_undersample,
    time_decay_weights,
)
from perpbot.ml.features import (
    FEATURE_COLS,
    OPTIONAL_FEATURES,
    SIDE_INDEX,
    SIGNAL_STRENGTH_INDEX,
    build_feature_frame,
)
from perpbot.ml.labels import barrier_labels
from tests.support.ml import LOOSE


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return synth_market(20, 11, symbol="DSUSDT")


@pytest.fixture(scope="module")
def ds3(market: pd.DataFrame):
    return build_dataset(market, LOOSE, negative_ratio=3, decay=2.0, symbol="DSUSDT")


def _random_bars(n: int, seed: int, with_corr: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 1.0 * np.exp(np.cumsum(rng.normal(0, 0.006, n)))
    openp = np.r_[close[0], close[:-1]]
    high = np.maximum(openp, close) * (1 + np.abs(rng.normal(0, 0.003, n)))
    low = np.minimum(openp, close) * (1 - np.abs(rng.normal(0, 0.003, n)))
    vol = rng.lognormal(10, 0.8, n)
    idx = pd.date_range("2025-01-01", periods=n, freq="15min", tz="UTC", name="timestamp").as_unit("ms")
    df = pd.DataFrame({"open": openp, "high": high, "low": low, "close": close, "volume": vol}, index=idx)
    if with_corr:
        for sfx, scale in (("btc", 60000.0), ("eth", 3000.0)):
            df[[f"{c}_{sfx}" for c in ("open", "high", "low", "close")]] = (
                np.c_[openp, high, low, close] * scale
            )
            df[f"volume_{sfx}"] = vol
    return df


@pytest.mark.parametrize("with_corr", [True, False])
def test_500_random_bars(with_corr: bool) -> None:
    df = _random_bars(500, 3, with_corr)
    ds = build_dataset(df, LOOSE, negative_ratio=3, decay=2.0, min_samples=0, symbol="RNDUSDT")
    assert ds.X.shape[1] == len(FEATURE_COLS) == 26 and ds.X.dtype == np.float64
    assert set(np.unique(ds.y)) <= {0, 1}
    assert ds.n_signals > 0
    assert not np.isinf(ds.X).any()
    corr = [FEATURE_COLS.index(c) for c in ("btc_ret_1", "primary_eth_rs")]
    if with_corr:
        assert np.isfinite(ds.X[:, corr]).all()
    else:  # the group is absent, not a reason to drop rows
        assert np.isnan(ds.X[:, corr]).all()


def test_flat_btc_and_constant_market() -> None:
    df = _random_bars(800, 5, True)
    for c in ("open", "high", "low", "close"):
        df[f"{c}_btc"] = 50000.0
    ds = build_dataset(df, LOOSE, min_samples=0)
    assert not np.isinf(ds.X).any()
    rs = ds.X[:, FEATURE_COLS.index("primary_btc_rs")]
    assert not np.isnan(rs).all()
    const = df.copy()
    const[["open", "high", "low", "close"]] = 1.0
    with pytest.raises(InsufficientDataError, match="CONSTUSDT"):  # ATR 0: nothing labelable
        build_dataset(const, LOOSE, min_samples=0, symbol="CONSTUSDT")


def test_rows_are_eligible_and_labels_match_barriers(market: pd.DataFrame, ds3) -> None:
    n = len(market)
    assert ds3.bar_index.min() >= 60 and ds3.bar_index.max() < n - 24
    assert np.all(np.diff(ds3.bar_index) > 0)  # time order, one sample per bar
    np.testing.assert_array_equal(ds3.label_end_bar, ds3.bar_index + 24)
    frame = build_feature_frame(market, LOOSE)
    lab = barrier_labels(
        market["high"].to_numpy(),
        market["low"].to_numpy(),
        frame["close"].to_numpy(),
        frame["atr"].to_numpy(),
        frame["signal"].to_numpy(),
        1.5,
        2.0,
    )
    sig = ds3.is_signal
    np.testing.assert_array_equal(ds3.y[sig], lab[ds3.bar_index[sig]].astype(np.int8))
    # signal rows keep the frame's features untouched
    np.testing.assert_array_equal(ds3.X[sig], frame[list(FEATURE_COLS)].to_numpy()[ds3.bar_index[sig]])
    t = frame.index.as_unit("ms").asi8
    np.testing.assert_array_equal(ds3.time_ms, t[ds3.bar_index])


def test_k3_vs_k0(market: pd.DataFrame, ds3) -> None:
    ds0 = build_dataset(market, LOOSE, negative_ratio=0, decay=2.0)
    hold = ds3.source == SOURCE_HOLD
    assert hold.sum() == 3 * ds3.n_signals  # plenty of candidates here
    assert (ds3.y[hold] == 0).all()
    assert ds0.n_signals == ds3.n_signals and (ds0.source == SOURCE_SIGNAL).all()
    np.testing.assert_array_equal(ds0.bar_index, ds3.bar_index[~hold])
    np.testing.assert_array_equal(ds0.y, ds3.y[~hold])


def test_hold_negatives_carry_the_real_score_of_their_side(market: pd.DataFrame, ds3) -> None:
    """§13 gap: signal_strength must not be 0 by construction on HOLD negatives."""
    frame = build_feature_frame(market, LOOSE)
    hold = ds3.source == SOURCE_HOLD
    bars = ds3.bar_index[hold]
    side = ds3.side[hold]
    assert set(np.unique(side)) == {0, 1}
    np.testing.assert_array_equal(ds3.X[hold, SIDE_INDEX], side)
    expected = np.where(
        side == 1, frame["long_score"].to_numpy()[bars], frame["short_score"].to_numpy()[bars]
    )
    np.testing.assert_array_equal(ds3.X[hold, SIGNAL_STRENGTH_INDEX], expected)
    assert (ds3.X[hold, SIGNAL_STRENGTH_INDEX] > 0).any()
    assert (frame["signal"].to_numpy()[bars] == 0).all()


def test_seeded_and_deterministic(market: pd.DataFrame, ds3) -> None:
    again = build_dataset(market, LOOSE, negative_ratio=3, decay=2.0, seed=42)
    np.testing.assert_array_equal(again.bar_index, ds3.bar_index)
    np.testing.assert_array_equal(again.X, ds3.X)
    other = build_dataset(market, LOOSE, negative_ratio=3, decay=2.0, seed=43)
    assert not np.array_equal(other.bar_index, ds3.bar_index)


def test_weights(ds3) -> None:
    assert ds3.w.mean() == pytest.approx(1.0)
    assert np.all(np.diff(ds3.w) > 0)
    assert ds3.w[-1] / ds3.w[0] == pytest.approx(np.exp(2.0))
    np.testing.assert_array_equal(time_decay_weights(5, 0.0), np.ones(5))
    assert time_decay_weights(1, 2.0).tolist() == [1.0]


def test_oi_column_absent_or_zero(market: pd.DataFrame) -> None:
    no_oi = market.drop(columns=["oi_change", "funding_rate"])
    zeros = market.assign(oi_change=0.0, funding_rate=0.0)
    a = build_dataset(no_oi, LOOSE)
    b = build_dataset(zeros, LOOSE)
    opt = [FEATURE_COLS.index(c) for c in OPTIONAL_FEATURES]
    assert np.isnan(a.X[:, opt]).all() and np.isnan(b.X[:, opt]).all()
    # NaN OI/funding never removes a sample
    np.testing.assert_array_equal(a.bar_index, b.bar_index)
    c = build_dataset(market, LOOSE)
    np.testing.assert_array_equal(c.bar_index[c.is_signal], a.bar_index[a.is_signal])
    assert np.isfinite(c.X[:, opt]).any()  # the synthetic OI is really fed through


def test_too_few_samples_names_symbol_and_counts() -> None:
    m = synth_market(2, 1, symbol="TINYUSDT")
    with pytest.raises(InsufficientDataError, match=r"TINYUSDT: only \d+ samples \(\d+ signal rows"):
        build_dataset(m, LOOSE, symbol="TINYUSDT")


def test_balance_spec_row_keeps_every_signal_index() -> None:
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 0])
    source = np.array(
        [
            SOURCE_SIGNAL,
            SOURCE_SIGNAL,
            SOURCE_HOLD,
            SOURCE_HOLD,
            SOURCE_SIGNAL,
            SOURCE_HOLD,
            SOURCE_HOLD,
            SOURCE_HOLD,
            SOURCE_SIGNAL,
            SOURCE_HOLD,
        ]
    )
    keep = stratified_undersample(y, source, seed=42)
    assert set(np.flatnonzero(source == SOURCE_SIGNAL)) <= set(keep)
    assert np.all(np.diff(keep) > 0)
    hold_kept = [i for i in keep if source[i] == SOURCE_HOLD]
    assert len(hold_kept) == 2  # min(#hold negatives = 6, #positives = 2)
    np.testing.assert_array_equal(keep, stratified_undersample(y, source, seed=42))


def test_balance_without_positives_keeps_no_hold_negatives() -> None:
    y = np.zeros(6, dtype=np.int8)
    source = np.array([SOURCE_SIGNAL] * 2 + [SOURCE_HOLD] * 4)
    assert stratified_undersample(y, source).tolist() == [0, 1]
