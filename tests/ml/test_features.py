"""The 26 features (SPEC §4, §13 row 20, §14 "Features" rows) and the four required properties:
(a) live/full parity, (b) no look-ahead, (c) no ±inf and NaN only where allowed, (d) OI/funding fed.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perpbot.config import SignalParams
from perpbot.data.synth import synth_market
from perpbot.domain.types import Side
from perpbot.errors import DataError
from perpbot.ml import features as feat
from perpbot.ml.features import (
    BASE_FEATURES,
    CORRELATION_FEATURES,
    FEATURE_COLS,
    FEATURE_WARMUP_BARS,
    FRAME_COLS,
    LIVE_WINDOW_BARS,
    OPTIONAL_FEATURES,
    SIDE_INDEX,
    SIGNAL_STRENGTH_INDEX,
    FrameIndex,
    build_feature_frame,
    context_from_row,
    contexts_arrays,
    feature_schema_hash,
    iter_contexts,
    live_context,
    live_feature_row,
    rolling_zscore,
)
from perpbot.ml.rolling import rolling_zscore_last
from perpbot.strategy.indicators import compute_indicators
from perpbot.strategy.signal import rule_signal
from tests.support.cli import invoke, one_line_error
from tests.support.data import BAD_PARQUETS

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL_SYMBOLS = ("xrpusdt", "trxusdt", "dogeusdt")
PARITY_TOL = 1e-9
# Relaxed rules so that a month of synthetic candles carries a few hundred LONG/SHORT rows.
LOOSE = SignalParams(signal_threshold=2, adx_threshold=0.0, vol_multiplier=1.2)
DEFAULT = SignalParams()

SPEC_ORDER = [
    "rsi",
    "macd_hist",
    "bb_pct",
    "ema_align",
    "stoch_k",
    "stoch_d",
    "atr_pct",
    "vol_ratio",
    "ret_1",
    "ret_3",
    "ret_5",
    "signal_strength",
    "side",
    "btc_ret_1",
    "btc_ret_3",
    "btc_ret_5",
    "eth_ret_1",
    "eth_ret_3",
    "eth_ret_5",
    "primary_btc_rs",
    "primary_eth_rs",
    "oi_change",
    "funding_rate",
    "oi_change_ma5",
    "oi_price_spread",
    "adx",
]


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return synth_market(30, 5, symbol="XRPUSDT")  # 2,880 bars with BTC/ETH, OI and funding


@pytest.fixture(scope="module")
def frame(market: pd.DataFrame) -> pd.DataFrame:
    return build_feature_frame(market, LOOSE)


def without_correlation(market: pd.DataFrame) -> pd.DataFrame:
    return market.drop(columns=[c for c in market.columns if c.endswith(("_btc", "_eth"))])


def row_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Max |a − b| where NaN == NaN counts as equal and NaN vs number as infinitely different."""
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return float("inf")
    ok = ~nan_a
    return float(np.max(np.abs(a[ok] - b[ok]), initial=0.0))


# --------------------------------------------------------------------------- schema


def test_feature_cols_are_the_26_spec_names_in_order() -> None:
    assert len(FEATURE_COLS) == 26 and list(FEATURE_COLS) == SPEC_ORDER
    assert FEATURE_COLS[SIGNAL_STRENGTH_INDEX] == "signal_strength" and FEATURE_COLS[SIDE_INDEX] == "side"
    assert OPTIONAL_FEATURES == ("oi_change", "funding_rate", "oi_change_ma5", "oi_price_spread")
    assert len(CORRELATION_FEATURES) == 8 and set(CORRELATION_FEATURES) < set(FEATURE_COLS)
    assert len(BASE_FEATURES) == 14
    assert not any("xrp" in name for name in FEATURE_COLS)  # neutral names (SPEC §13 row 29)


def test_schema_hash_is_pinned_and_tracks_names(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = feature_schema_hash()
    canonical = json.dumps({"features": SPEC_ORDER, "version": 1}, sort_keys=True, separators=(",", ":"))
    assert digest == hashlib.sha256(canonical.encode()).hexdigest()
    monkeypatch.setattr(feat, "FEATURE_COLS", tuple(reversed(FEATURE_COLS)))
    assert feature_schema_hash() != digest
    monkeypatch.undo()
    monkeypatch.setattr(feat, "FEATURE_SCHEMA_VERSION", 2)
    assert feature_schema_hash() != digest


def test_frame_columns_dtypes_and_index(market: pd.DataFrame, frame: pd.DataFrame) -> None:
    assert tuple(frame.columns) == FRAME_COLS
    assert frame.index.equals(market.index)
    assert frame["signal"].dtype == np.int8
    assert frame["long_score"].dtype == np.int8 and frame["short_score"].dtype == np.int8
    assert frame["vol_surge"].dtype == np.bool_
    floats = [c for c in FRAME_COLS if c not in ("signal", "long_score", "short_score", "vol_surge")]
    assert (frame[floats].dtypes == np.float64).all()
    np.testing.assert_array_equal(frame["close"], market["close"])


# --------------------------------------------------------------------------- SPEC §4 definitions


def z_ref(s: pd.Series, window: int) -> pd.Series:
    """SPEC §4 zW with pandas: population std, min_periods 1, NaN skipped and preserved."""
    roll = s.rolling(window, min_periods=1)
    return (s - roll.mean()) / roll.std(ddof=0).clip(lower=1e-8)


def reference_features(market: pd.DataFrame, params: SignalParams) -> pd.DataFrame:
    """A literal, slow pandas transcription of the SPEC §4 training column, for comparison."""
    c, h, lo, v = (market[k].astype(float) for k in ("close", "high", "low", "volume"))
    rsi = pd.Series(talib.RSI(c.to_numpy(), 14), index=c.index)
    lo_rsi, hi_rsi = rsi.rolling(14).min(), rsi.rolling(14).max()
    stoch_k = (100 * (rsi - lo_rsi) / (hi_rsi - lo_rsi)).rolling(3).mean()
    upper, _, lower = talib.BBANDS(c.to_numpy(), 20, 2, 2, 0)
    e9, e21, e50 = (pd.Series(talib.EMA(c.to_numpy(), p), index=c.index) for p in (9, 21, 50))
    align = pd.Series(np.select([(e9 > e21) & (e21 > e50), (e9 < e21) & (e21 < e50)], [1.0, -1.0], 0.0))
    align = align.set_axis(c.index).where(e50.notna())
    atr = pd.Series(talib.ATR(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 14), index=c.index)
    adx = pd.Series(talib.ADX(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 14), index=c.index)
    rets = {n: c.pct_change(n).fillna(0.0) for n in (1, 3, 5)}
    btc = {n: market["close_btc"].pct_change(n).fillna(0.0) for n in (1, 3, 5)}
    eth = {n: market["close_eth"].pct_change(n).fillna(0.0) for n in (1, 3, 5)}
    oi = market["oi_change"].mask(market["oi_change"] == 0)
    fr = market["funding_rate"].ffill().mask(lambda s: s == 0)
    ind = compute_indicators(*(market[k].to_numpy() for k in ("open", "high", "low", "close", "volume")))
    sig = rule_signal(ind, c.to_numpy(), v.to_numpy(), params)
    strength = np.select([sig.signal == 1, sig.signal == -1], [sig.long_score, sig.short_score], 0)
    out = {
        "rsi": rsi,
        "macd_hist": pd.Series(talib.MACD(c.to_numpy(), 12, 26, 9)[2], index=c.index),
        "bb_pct": (c - lower) / (upper - lower + 1e-8),
        "ema_align": align,
        "stoch_k": stoch_k,
        "stoch_d": stoch_k.rolling(3).mean(),
        "atr_pct": z_ref(atr / (c + 1e-8), 288),
        "vol_ratio": z_ref(v / (v.rolling(20).mean() + 1e-8), 288),
        **{f"ret_{n}": z_ref(rets[n], 288) for n in (1, 3, 5)},
        "signal_strength": pd.Series(strength.astype(float), index=c.index),
        "side": pd.Series((sig.signal == 1).astype(float), index=c.index),
        **{f"btc_ret_{n}": z_ref(btc[n], 288) for n in (1, 3, 5)},
        **{f"eth_ret_{n}": z_ref(eth[n], 288) for n in (1, 3, 5)},
        "primary_btc_rs": z_ref((rets[1] / btc[1]).where(btc[1] != 0, 0.0), 288),
        "primary_eth_rs": z_ref((rets[1] / eth[1]).where(eth[1] != 0, 0.0), 288),
        "oi_change": z_ref(oi, 96),
        "funding_rate": z_ref(fr, 96),
        "oi_change_ma5": z_ref(oi.rolling(5, min_periods=1).mean(), 96),
        "oi_price_spread": z_ref(oi, 96) - z_ref(rets[1], 288),
        "adx": z_ref(adx, 288),
    }
    return pd.DataFrame(out)[list(FEATURE_COLS)]


def test_every_feature_matches_the_spec_transcription(market: pd.DataFrame, frame: pd.DataFrame) -> None:
    ref = reference_features(market, LOOSE)
    for name in FEATURE_COLS:
        got, want = frame[name].to_numpy(), ref[name].to_numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, equal_nan=True, err_msg=name)


def test_signal_rows_carry_their_side_and_score_hold_rows_zero(frame: pd.DataFrame) -> None:
    sig = frame["signal"].to_numpy()
    longs, shorts, holds = sig == 1, sig == -1, sig == 0
    assert longs.sum() > 20 and shorts.sum() > 20
    assert (frame["side"][longs] == 1.0).all() and (frame["side"][shorts] == 0.0).all()
    np.testing.assert_array_equal(frame["signal_strength"][longs], frame["long_score"][longs])
    np.testing.assert_array_equal(frame["signal_strength"][shorts], frame["short_score"][shorts])
    assert (frame["signal_strength"][longs] >= LOOSE.signal_threshold).all()
    assert (frame.loc[holds, ["signal_strength", "side"]] == 0.0).all().all()


def test_with_and_without_btc_eth_26_or_18_features(market: pd.DataFrame, frame: pd.DataFrame) -> None:
    assert np.isfinite(frame[list(FEATURE_COLS)].iloc[-1]).sum() == 26
    bare = build_feature_frame(without_correlation(market), LOOSE)
    assert tuple(bare.columns) == FRAME_COLS
    assert np.isfinite(bare[list(FEATURE_COLS)].iloc[-1]).sum() == 18
    assert bare[list(CORRELATION_FEATURES)].isna().all().all()
    others = [c for c in FEATURE_COLS if c not in CORRELATION_FEATURES]
    pd.testing.assert_frame_equal(bare[others], frame[others])


def test_constant_btc_closes_give_zero_relative_strength(market: pd.DataFrame) -> None:
    flat = market.copy()
    flat["close_btc"] = 50_000.0
    f = build_feature_frame(flat, LOOSE)
    assert (f["primary_btc_rs"] == 0.0).all() and (f["btc_ret_1"] == 0.0).all()
    assert np.isfinite(f["primary_eth_rs"]).all()


def test_100_bars_no_nan_at_the_end(market: pd.DataFrame) -> None:
    f = build_feature_frame(market.iloc[:100], LOOSE)
    assert not f[list(FEATURE_COLS)].iloc[-1].isna().any()
    assert not f[list(BASE_FEATURES)].iloc[FEATURE_WARMUP_BARS:].isna().any().any()
    assert f["ema_align"].iloc[FEATURE_WARMUP_BARS - 1 : FEATURE_WARMUP_BARS].isna().all()


# --------------------------------------------------------------------------- rolling z-score


def test_rolling_zscore_matches_pandas_with_nans_and_any_anchor() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(3.0, 2.0, (3, 2000))
    x[0, :40] = np.nan
    x[1, 700:900] = np.nan
    x[2, ::7] = np.nan
    for anchor in (0, 1, 287, 123_456_789):
        z = rolling_zscore(x, 288, anchor)
        for row in range(3):
            want = z_ref(pd.Series(x[row]), 288).to_numpy()
            np.testing.assert_allclose(z[row], want, atol=1e-10, rtol=0, equal_nan=True)
    const = np.full(500, 7.25)
    assert np.abs(rolling_zscore(const, 96)).max() < 1e-6  # flat window: std floored, z ≈ 0, finite


def test_rolling_zscore_depends_on_window_contents_only() -> None:
    """Same absolute bar numbers ⇒ bit-identical z, however much history precedes the window."""
    rng = np.random.default_rng(10)
    x = rng.lognormal(15, 1.5, 5000)  # volume-like: large values, where running sums drift most
    full = rolling_zscore(x, 288, anchor=1_000)
    for start in (1, 713, 2_999, 4_000):
        part = rolling_zscore(x[start:], 288, anchor=1_000 + start)
        np.testing.assert_array_equal(part[-(5000 - start - 576) :], full[-(5000 - start - 576) :])


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(1, 4),
    n=st.integers(1, 900),
    window=st.sampled_from([5, 96, 288]),
    anchor=st.integers(0, 10**7),
    nan_share=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
    scale=st.sampled_from([1e-6, 1.0, 1e6]),
    flat=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_last_column_alone_is_the_full_z_score_bit_for_bit(
    rows: int, n: int, window: int, anchor: int, nan_share: float, scale: float, flat: bool, seed: int
) -> None:
    # The live row's z-scores come from ``rolling_zscore_last``: the same bits as the full
    # computation's last column (NaNs, flat windows, any block offset), or live/batch parity breaks.
    rng = np.random.default_rng(seed)
    x = np.full((rows, n), 1.25 * scale) if flat else rng.normal(0.0, scale, (rows, n))
    x[rng.random((rows, n)) < nan_share] = np.nan
    want = rolling_zscore(x, window, anchor)[:, -1]
    got = rolling_zscore_last(x, window, anchor)
    assert got.shape == (rows,) and got.tobytes() == want.tobytes()
    assert rolling_zscore_last(x[0], window, anchor).tobytes() == want[0].tobytes()


# --------------------------------------------------------------------------- (a) parity


def parity_error(market: pd.DataFrame, params: SignalParams, rows: np.ndarray, window: int) -> float:
    full = build_feature_frame(market, params).to_numpy(dtype=np.float64)
    worst = 0.0
    for t in rows:
        live = feat.feature_arrays(market.iloc[t + 1 - window : t + 1], params)
        got = np.array([live[name][-1] for name in FRAME_COLS], dtype=np.float64)
        worst = max(worst, row_diff(got, full[t]))
    return worst


def test_parity_live_row_equals_full_row_on_synthetic_data(market: pd.DataFrame, frame: pd.DataFrame) -> None:
    rows = np.linspace(LIVE_WINDOW_BARS + 200, len(market) - 1, 25).astype(int)
    assert parity_error(market, LOOSE, rows, LIVE_WINDOW_BARS) <= PARITY_TOL
    for t in rows[::6]:
        live = live_feature_row(market.iloc[: t + 1], LOOSE)  # live trims to LIVE_WINDOW_BARS itself
        assert live.name == market.index[t] and tuple(live.index) == FRAME_COLS
        assert row_diff(live.to_numpy(), frame.iloc[t].to_numpy(dtype=np.float64)) <= PARITY_TOL
    # The check is sensitive: a window far too short for the 288-bar z-scores breaks parity.
    assert parity_error(market, LOOSE, rows, 300) > PARITY_TOL


def test_the_live_last_row_is_bit_identical_to_the_full_computation(market: pd.DataFrame) -> None:
    # ``last_only`` computes the windowed means and z-scores on the shortest suffix the last row
    # depends on: not "close", but equal bit for bit (NaN included) for every window start and
    # length, sparse OI/funding, short markets and block boundaries of both z-score windows.
    rng = np.random.default_rng(7)
    m = market.copy()
    m["oi_change"] = np.where(rng.random(len(m)) < 0.3, 0.0, rng.normal(0, 0.01, len(m)))
    m["funding_rate"] = np.where(rng.random(len(m)) < 0.6, 0.0, rng.normal(0, 1e-4, len(m)))
    ends = [*range(1, 40, 3), *range(284, 292), *range(572, 580), *range(1000, len(m), 211)]
    checked = 0
    for end in ends:
        for start in {0, max(0, end - LIVE_WINDOW_BARS), max(0, end - 333)}:
            window = m.iloc[start:end]
            full = feat.feature_arrays(window, LOOSE)
            last = feat.feature_arrays(window, LOOSE, last_only=True)
            for name in FRAME_COLS:
                assert last[name].shape == (1,), name
                assert np.array_equal(full[name][-1:], last[name], equal_nan=True), (start, end, name)
            checked += 1
    assert checked > 60


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"{REAL_DATA} absent")
@pytest.mark.parametrize("sym", REAL_SYMBOLS)
def test_parity_live_row_equals_full_row_on_real_data(sym: str) -> None:
    market = pd.read_parquet(REAL_DATA / sym / "combined_15m.parquet")
    rows = np.linspace(3 * LIVE_WINDOW_BARS, len(market) - 1, 50).astype(int)
    for params in (DEFAULT, LOOSE):
        err = parity_error(market, params, rows, LIVE_WINDOW_BARS)
        assert err <= PARITY_TOL, f"{sym}: max |live − full| = {err:.3g}"


# --------------------------------------------------------------------------- (b) no look-ahead


@pytest.fixture(scope="module")
def sparse_market(market: pd.DataFrame) -> pd.DataFrame:
    """Funding known only at its 8-hourly settlements and gaps in OI: a fill that looked forward
    (bfill, interpolation) would leak, so the look-ahead tests can catch it."""
    m = market.copy()
    settle = (m.index.hour % 8 == 0) & (m.index.minute == 0)
    m.loc[~settle, "funding_rate"] = np.nan
    m.iloc[300:340, m.columns.get_loc("oi_change")] = np.nan
    return m


@pytest.fixture(scope="module")
def sparse_frame(sparse_market: pd.DataFrame) -> pd.DataFrame:
    return build_feature_frame(sparse_market, LOOSE)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=st.integers(min_value=0, max_value=2879))
def test_no_look_ahead_truncated_market(
    sparse_market: pd.DataFrame, sparse_frame: pd.DataFrame, t: int
) -> None:
    cut = build_feature_frame(sparse_market.iloc[: t + 1], LOOSE)
    np.testing.assert_array_equal(
        cut.iloc[-1].to_numpy(np.float64), sparse_frame.iloc[t].to_numpy(np.float64)
    )


@pytest.mark.parametrize("t", [60, 310, 1500, 2600])
def test_no_look_ahead_future_rows_scrambled(
    sparse_market: pd.DataFrame, sparse_frame: pd.DataFrame, t: int
) -> None:
    rng = np.random.default_rng(t)
    other = sparse_market.copy()
    future = other.iloc[t + 1 :]
    other.iloc[t + 1 :] = future.to_numpy() * rng.uniform(0.5, 1.5, future.shape)
    scrambled = build_feature_frame(other, LOOSE)
    pd.testing.assert_frame_equal(scrambled.iloc[: t + 1], sparse_frame.iloc[: t + 1])
    assert not scrambled.iloc[t + 1 :].equals(sparse_frame.iloc[t + 1 :])  # the future did change


def test_sparse_funding_is_forward_filled(sparse_frame: pd.DataFrame, frame: pd.DataFrame) -> None:
    """The recorded files are already forward-filled; settlement-only input must give the same."""
    pd.testing.assert_series_equal(sparse_frame["funding_rate"], frame["funding_rate"])


# --------------------------------------------------------------------------- (c) inf / NaN


def assert_nan_only_where_allowed(f: pd.DataFrame, has_corr: bool) -> None:
    values = f[list(FEATURE_COLS)].to_numpy(dtype=np.float64)
    assert not np.isinf(values).any()
    required = list(BASE_FEATURES) + (list(CORRELATION_FEATURES) if has_corr else [])
    assert not f[required].iloc[FEATURE_WARMUP_BARS:].isna().any().any()
    assert f[["signal_strength", "side", "ret_1", "ret_3", "ret_5"]].notna().all().all()
    if not has_corr:
        assert f[list(CORRELATION_FEATURES)].isna().all().all()
    assert np.isfinite(f[["atr", "close", "adx_raw"]].iloc[FEATURE_WARMUP_BARS:].to_numpy()).all()


def test_no_inf_and_nan_only_in_warmup_optional_or_absent(market: pd.DataFrame, frame: pd.DataFrame) -> None:
    assert_nan_only_where_allowed(frame, has_corr=True)
    assert_nan_only_where_allowed(build_feature_frame(without_correlation(market), LOOSE), has_corr=False)


def test_constant_market_is_finite(market: pd.DataFrame) -> None:
    flat = market.iloc[:600].copy()
    flat[:] = 1.0
    flat["oi_change"] = 0.0
    f = build_feature_frame(flat, LOOSE)
    assert_nan_only_where_allowed(f, has_corr=True)
    assert (f["signal"] == 0).all() and (f["short_score"] == 0).all()
    # TA-Lib's RSI of flat prices is 0 (its 0/0 convention, kept: TA-Lib is the reference), which
    # earns the "RSI < 35" point; no other rule may fire on a flat tape (no spurious band/stoch point).
    assert (f["long_score"] <= 1).all()
    assert f[list(OPTIONAL_FEATURES[:1] + OPTIONAL_FEATURES[2:])].isna().all().all()


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"{REAL_DATA} absent")
@pytest.mark.parametrize("sym", REAL_SYMBOLS)
def test_real_data_no_inf_and_oi_zeros_become_nan(sym: str) -> None:
    market = pd.read_parquet(REAL_DATA / sym / "combined_15m.parquet")
    f = build_feature_frame(market, DEFAULT)
    assert_nan_only_where_allowed(f, has_corr=True)
    assert f[["oi_change", "oi_change_ma5", "oi_price_spread"]].isna().all().all()  # file's OI is all zeros
    assert f["funding_rate"].notna().mean() > 0.99


# --------------------------------------------------------------------------- (d) OI / funding fed


def test_oi_and_funding_features_follow_their_inputs(market: pd.DataFrame, frame: pd.DataFrame) -> None:
    assert market["oi_change"].ne(0).mean() > 0.99 and market["funding_rate"].nunique() > 10
    oi_feats = ["oi_change", "oi_change_ma5", "oi_price_spread"]
    assert frame[[*oi_feats, "funding_rate"]].iloc[100:].notna().all().all()

    bumped = market.copy()
    bumped["oi_change"] = market["oi_change"] * 3.0 + 0.01
    f_oi = build_feature_frame(bumped, LOOSE)
    for name in oi_feats:
        assert not np.allclose(f_oi[name].iloc[1:], frame[name].iloc[1:]), name
    pd.testing.assert_series_equal(f_oi["funding_rate"], frame["funding_rate"])

    shifted = market.copy()
    shifted["funding_rate"] = market["funding_rate"].to_numpy()[::-1]
    f_fr = build_feature_frame(shifted, LOOSE)
    assert not np.allclose(f_fr["funding_rate"].iloc[100:], frame["funding_rate"].iloc[100:])
    pd.testing.assert_frame_equal(f_fr[oi_feats], frame[oi_feats])


def test_all_zero_or_missing_oi_gives_nan_not_an_error(market: pd.DataFrame, frame: pd.DataFrame) -> None:
    zero = market.copy()
    zero["oi_change"] = 0.0
    zero["funding_rate"] = 0.0
    f = build_feature_frame(zero, LOOSE)
    assert f[list(OPTIONAL_FEATURES)].isna().all().all()
    absent = build_feature_frame(market.drop(columns=["oi_change", "funding_rate"]), LOOSE)
    assert absent[list(OPTIONAL_FEATURES)].isna().all().all()
    others = [c for c in FEATURE_COLS if c not in OPTIONAL_FEATURES]
    pd.testing.assert_frame_equal(absent[others], frame[others])


def test_leading_oi_zeros_are_missing_then_finite(market: pd.DataFrame) -> None:
    m = market.copy()
    m.iloc[:50, m.columns.get_loc("oi_change")] = 0.0
    f = build_feature_frame(m, LOOSE)
    assert f["oi_change"].iloc[:50].isna().all() and f["oi_change"].iloc[50:].notna().all()
    assert f["oi_price_spread"].iloc[50:].nunique() > 2


# --------------------------------------------------------------------------- contexts


def test_context_from_row_matches_frame(frame: pd.DataFrame) -> None:
    arrays = contexts_arrays(frame)
    assert arrays.values.shape == (len(frame), len(FRAME_COLS))
    i = int(np.flatnonzero(frame["signal"].to_numpy() == 1)[-1])
    ctx = context_from_row("XRPUSDT", int(arrays.open_time_ms[i]), arrays.values[i], arrays.index)
    row = frame.iloc[i]
    assert ctx.symbol == "XRPUSDT" and ctx.signal is Side.LONG
    assert ctx.open_time_ms == frame.index[i].value // 1_000_000
    assert (ctx.close, ctx.atr, ctx.adx, ctx.rsi) == (row["close"], row["atr"], row["adx_raw"], row["rsi"])
    assert (ctx.long_score, ctx.short_score, ctx.vol_surge) == (
        row["long_score"],
        row["short_score"],
        bool(row["vol_surge"]),
    )
    np.testing.assert_array_equal(ctx.features, row[list(FEATURE_COLS)].to_numpy(np.float64))
    ctx.features[0] = -999.0  # the context owns a copy
    assert arrays.values[i, 0] != -999.0
    short = ctx.features_for(Side.SHORT)
    assert short[SIDE_INDEX] == 0.0 and short[SIGNAL_STRENGTH_INDEX] == ctx.short_score
    assert ctx.features_for(Side.LONG)[SIDE_INDEX] == 1.0


def test_frame_index_handles_reordered_columns(frame: pd.DataFrame) -> None:
    shuffled = frame[list(reversed(FRAME_COLS))]
    arrays = contexts_arrays(shuffled)
    ctx = context_from_row("XRPUSDT", 0, arrays.values[-1], arrays.index)
    np.testing.assert_array_equal(ctx.features, frame[list(FEATURE_COLS)].iloc[-1].to_numpy(np.float64))
    with pytest.raises(ValueError, match="missing columns"):
        FrameIndex.from_columns(FEATURE_COLS)


def test_iter_contexts_and_live_context(market: pd.DataFrame, frame: pd.DataFrame) -> None:
    contexts = list(iter_contexts("XRPUSDT", frame.iloc[-50:]))
    assert len(contexts) == 50
    assert [c.signal for c in contexts].count(Side.SHORT) == int((frame["signal"].iloc[-50:] == -1).sum())
    live = live_context("XRPUSDT", market, LOOSE)
    last = contexts[-1]
    assert live.open_time_ms == last.open_time_ms and live.signal == last.signal
    assert row_diff(live.features, last.features) <= PARITY_TOL


def test_context_building_is_cheap(frame: pd.DataFrame) -> None:
    arrays = contexts_arrays(frame)
    started = time.perf_counter()
    for _ in range(4):
        for i in range(len(frame)):
            context_from_row("XRPUSDT", int(arrays.open_time_ms[i]), arrays.values[i], arrays.index)
    per_call = (time.perf_counter() - started) / (4 * len(frame))
    assert per_call < 20e-6  # ~120k contexts per backtest: well under 3 s even on a slow CI box


# --------------------------------------------------------------------------- input handling


def test_missing_ohlcv_is_a_data_error(market: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="volume"):
        build_feature_frame(market.drop(columns=["volume"]), LOOSE)


def test_empty_and_tiny_markets(market: pd.DataFrame) -> None:
    empty = build_feature_frame(market.iloc[:0], LOOSE)
    assert tuple(empty.columns) == FRAME_COLS and len(empty) == 0
    for n in (1, 2, 4):  # shorter than every window, including the OI MA5
        tiny = build_feature_frame(market.iloc[:n], LOOSE)
        assert len(tiny) == n and (tiny["signal"] == 0).all()
        assert tiny["oi_change_ma5"].iloc[1:].notna().all()
    with pytest.raises(DataError):
        live_feature_row(market.iloc[:0], LOOSE)


# --------------------------------------------------------------------------- CLI


def test_features_command_writes_the_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, market: pd.DataFrame
) -> None:
    from typer.testing import CliRunner

    from perpbot.cli.main import app
    from perpbot.config import load_config
    from perpbot.data.schema import data_path
    from perpbot.data.store import load_market, save_market

    monkeypatch.chdir(tmp_path)  # no stray .env
    src = save_market(market.iloc[:1200], data_path(tmp_path / "data", "XRPUSDT"))
    out = tmp_path / "out" / "xrp_features.parquet"
    args = ["features", "--symbol", "XRPUSDT", "--data-dir", str(tmp_path / "data"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    written = pd.read_parquet(out)
    expected = build_feature_frame(load_market(src), load_config(env_file=None).params_for("XRPUSDT"))
    assert written.index.name == "timestamp" and tuple(written.columns) == FRAME_COLS
    pd.testing.assert_frame_equal(written, expected, check_freq=False)
    assert not list(out.parent.glob(".*.tmp"))  # atomic write leaves no temp file

    missing = CliRunner().invoke(app, ["features", "--data-dir", str(tmp_path / "data"), "--out", str(out)])
    assert missing.exit_code == 2
    absent = CliRunner().invoke(
        app, ["features", "--symbol", "TRXUSDT", "--data-dir", "nowhere", "--out", "x"]
    )
    assert absent.exit_code == 2 and not Path("x").exists()


def test_features_command_progress_bar_and_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, market: pd.DataFrame
) -> None:
    from perpbot.data.schema import data_path
    from perpbot.data.store import save_market

    monkeypatch.chdir(tmp_path)  # no stray .env
    save_market(market.iloc[:400], data_path(tmp_path / "data", "XRPUSDT"))
    args = ("features", "--symbol", "XRPUSDT", "--data-dir", str(tmp_path / "data"), "--out")
    shown = invoke(*args, "a.parquet")
    assert shown.exit_code == 0, shown.output
    assert "features XRPUSDT" in shown.stderr and "2/2" in shown.stderr and "━" in shown.stderr
    quiet = invoke(*args, "b.parquet", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    one_line_error(invoke(*args, "c.parquet", "--symbol", "XRP-USDT"), "--symbol='XRP-USDT'")
    one_line_error(invoke("features", "--data-dir", "data", "--out", "c.parquet"), "--symbol is required")
    assert not Path("c.parquet").exists()


@BAD_PARQUETS
def test_features_command_refuses_a_bad_parquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, market: pd.DataFrame, make_bad, fragment: str
) -> None:  # type: ignore[no-untyped-def]
    from perpbot.data.schema import data_path

    monkeypatch.chdir(tmp_path)
    path = data_path(tmp_path / "data", "BADUSDT")
    path.parent.mkdir(parents=True)
    make_bad(path, market)
    out = tmp_path / "out" / "f.parquet"
    res = invoke("features", "--symbol", "BADUSDT", "--data-dir", str(tmp_path / "data"), "--out", str(out))
    one_line_error(res, str(path), fragment)
    assert not out.parent.exists()  # nothing written
