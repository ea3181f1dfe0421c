"""synth_market: schema, determinism, and the market properties the strategy depends on."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd
import pytest

from perpbot.data.schema import ALL_COLUMNS, BTC_COLS, ETH_COLS, OHLCV
from perpbot.data.store import validate_market
from perpbot.data.synth import synth_market


def frame_hash(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(",".join(df.columns).encode())
    h.update(str(df.index.dtype).encode())
    h.update(df.index.asi8.tobytes())
    h.update(np.ascontiguousarray(df.to_numpy()).tobytes())
    return h.hexdigest()


def log_returns(s: pd.Series) -> np.ndarray:
    return np.diff(np.log(s.to_numpy()))


def test_schema_and_validity(synth_market: pd.DataFrame) -> None:
    df = synth_market
    assert list(df.columns) == list(ALL_COLUMNS)
    assert len(df) == 60 * 96
    assert str(df.index.dtype) == "datetime64[ms, UTC]" and df.index.name == "timestamp"
    assert df.index[0] == pd.Timestamp("2025-01-01", tz="UTC")
    assert all(dtype == np.float64 for dtype in df.dtypes)
    pd.testing.assert_frame_equal(validate_market(df), df)  # OHLC consistent, no gaps, finite


def test_same_arguments_give_a_byte_identical_frame() -> None:
    a = synth_market(days=30, seed=7)
    assert frame_hash(a) == frame_hash(synth_market(days=30, seed=7))
    assert frame_hash(a) != frame_hash(synth_market(days=30, seed=8))
    assert frame_hash(a) != frame_hash(synth_market(days=30, seed=7, start="2025-02-01"))


def test_symbols_differ_but_share_btc_and_eth() -> None:
    frames = {s: synth_market(days=20, seed=7, symbol=s) for s in ("XRPUSDT", "TRXUSDT", "DOGEUSDT")}
    xrp = frames["XRPUSDT"]
    starts = {s: f["open"].iloc[0] for s, f in frames.items()}
    assert len(set(starts.values())) == 3, starts
    for f in frames.values():
        pd.testing.assert_frame_equal(f[list(BTC_COLS + ETH_COLS)], xrp[list(BTC_COLS + ETH_COLS)])
        assert 0.3 <= f["open"].iloc[0] <= 3.0


def test_price_scales() -> None:
    df = synth_market(days=365, seed=7)
    assert df["close"].min() > 0.1 and df["close"].max() < 10
    assert df["close_btc"].min() > 30_000 and df["close_btc"].max() < 120_000
    assert df["close_eth"].min() > 1_500 and df["close_eth"].max() < 6_000


def test_btc_factor_drives_eth_and_the_primary(synth_market: pd.DataFrame) -> None:
    r, rb, re = (log_returns(synth_market[c]) for c in ("close", "close_btc", "close_eth"))
    assert np.corrcoef(r, rb)[0, 1] > 0.3
    assert np.corrcoef(re, rb)[0, 1] > 0.6


def test_volatility_clusters(synth_market: pd.DataFrame) -> None:
    for col in ("close", "close_btc"):
        sq = log_returns(synth_market[col]) ** 2
        # Squared returns are autocorrelated under GARCH, ~0 under i.i.d. shocks.
        assert np.corrcoef(sq[:-1], sq[1:])[0, 1] > 0.05, col


def test_volume_surges_with_moves_and_volatility(synth_market: pd.DataFrame) -> None:
    r = np.abs(log_returns(synth_market["close"]))
    vol = synth_market["volume"].to_numpy()[1:]
    assert np.corrcoef(r, vol)[0, 1] > 0.3
    ma20 = pd.Series(vol).rolling(20).mean().to_numpy()
    surges = vol > 2.5 * ma20
    assert 0.002 < np.nanmean(surges) < 0.1  # the volume-surge rule has something to find


def test_trend_regimes_both_ways(synth_market: pd.DataFrame) -> None:
    day_returns = np.log(synth_market["close"]).diff(96).dropna()
    assert day_returns.max() > 0.06 and day_returns.min() < -0.06


def test_funding_steps_every_eight_hours_and_is_forward_filled(synth_market: pd.DataFrame) -> None:
    f = synth_market["funding_rate"]
    changed = f.ne(f.shift())
    changed.iloc[0] = False
    at = synth_market.index[changed.to_numpy()]
    assert len(at) > 60 * 3 * 0.8  # nearly every period has a new rate
    assert set(at.hour) <= {0, 8, 16} and set(at.minute) == {0}
    assert (f != 0).mean() > 0.9 and f.abs().max() <= 0.002


def test_open_interest_change_is_small_and_non_zero(synth_market: pd.DataFrame) -> None:
    oi = synth_market["oi_change"]
    assert oi.iloc[0] == 0.0
    assert (oi.iloc[1:] != 0).all() and oi.abs().max() < 0.05
    assert oi.std() > 1e-4


def test_prices_sit_on_a_tick_grid(synth_market: pd.DataFrame) -> None:
    # XRPUSDT starts between 1 and 10, so ~5 significant digits means a 0.0001 tick.
    assert 1 < synth_market["open"].iloc[0] < 10
    for col in OHLCV[:4]:
        prices = synth_market[col].to_numpy()
        assert np.array_equal(prices, np.round(prices, 4)), col
        assert not np.array_equal(prices, np.round(prices, 3)), col


def test_fast_enough() -> None:
    best = min(_timed(lambda: synth_market(days=120, seed=3)) for _ in range(3))
    assert best < 0.5, best


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_rejects_non_positive_days() -> None:
    with pytest.raises(ValueError, match="days=0"):
        synth_market(days=0)
