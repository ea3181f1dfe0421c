"""A deterministic synthetic market in the data schema: the demo's default data and the test fixtures.

Why synthetic data at all: tests and the demo must run on a fresh machine without network or the
recorded files, yet exercise every code path the real data does. The generator therefore mimics
the properties the strategy and features depend on, not any particular history:

* one BTC factor drives ETH and the primary (correlation features have something to measure);
* GARCH(1,1)-like volatility clustering with fat-tailed shocks (ATR/Bollinger regimes change);
* trend regimes on the primary, up and down, so the rule signal fires LONG and SHORT;
* volume that surges with |return| and volatility (the volume-surge rule);
* funding that steps at 00/08/16 UTC and is forward-filled, as in the recorded files;
* a small non-zero ``oi_change`` (the recorded files are all zeros), so tests can prove that
  the OI features are really fed from the data.

It is *not* a stand-in for real data when judging a strategy: its edge, if any, is an artefact.
Same arguments give a byte-identical frame (NumPy's PCG64 streams are reproducible).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from perpbot.data.schema import ALL_COLUMNS, BAR_MS, INDEX_NAME

BARS_PER_DAY = 86_400_000 // BAR_MS
_FUNDING_PERIOD_MS = 8 * 3_600_000
_GARCH_ALPHA = 0.08
_GARCH_BETA = 0.90
_T_DOF = 5.0


@dataclass(frozen=True, slots=True)
class _LegSpec:
    """How one instrument's log-returns are generated around its own price level."""

    price0: float
    bar_vol: float  # long-run per-bar volatility of the idiosyncratic part
    reversion: float  # pull of the log price back to its start, per bar (keeps price scales sane)
    volume_base: float
    price_decimals: int
    volume_decimals: int


def _symbol_key(symbol: str) -> int:
    """Stable across runs and machines (unlike ``hash``), so XRP/TRX/DOGE differ reproducibly."""
    return zlib.crc32(symbol.upper().encode("ascii"))


def _fat_tails(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance Student-t shocks: crypto returns have fat tails."""
    return rng.standard_t(_T_DOF, n) / math.sqrt(_T_DOF / (_T_DOF - 2.0))


def _garch_path(
    shocks: np.ndarray, bar_vol: float, reversion: float, common: np.ndarray, drift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Returns r_t = common_t + drift_t + sigma_t·z_t − reversion·x_{t−1}, with GARCH(1,1) sigma.

    A plain loop: the recursion is inherently sequential, and on Python floats it costs a few
    milliseconds for a year of 15-minute bars.
    """
    omega = bar_vol**2 * (1.0 - _GARCH_ALPHA - _GARCH_BETA)
    var = bar_vol**2
    level = 0.0
    n = len(shocks)
    out_r = [0.0] * n
    out_s = [0.0] * n
    z_list, c_list, d_list = shocks.tolist(), common.tolist(), drift.tolist()
    for i in range(n):
        sigma = math.sqrt(var)
        eps = sigma * z_list[i]
        r = c_list[i] + d_list[i] + eps - reversion * level
        level += r
        out_r[i] = r
        out_s[i] = sigma
        var = omega + _GARCH_ALPHA * eps * eps + _GARCH_BETA * var
    return np.asarray(out_r), np.asarray(out_s)


def _regimes(rng: np.random.Generator, n: int, mean_bars: float = 300.0) -> np.ndarray:
    """Piecewise-constant trend state in {-1, 0, +1} with geometric durations."""
    states: list[np.ndarray] = []
    filled = 0
    while filled < n:
        length = int(rng.geometric(1.0 / mean_bars))
        state = int(rng.choice((-1, 0, 1), p=(0.35, 0.3, 0.35)))
        states.append(np.full(length, state, dtype=np.int8))
        filled += length
    return np.concatenate(states)[:n]


def _candles(
    rng: np.random.Generator, returns: np.ndarray, sigma: np.ndarray, spec: _LegSpec
) -> dict[str, np.ndarray]:
    """OHLCV from log-returns; rounding to a tick is monotone, so OHLC stays consistent."""
    close = spec.price0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate(([spec.price0], close[:-1]))
    wick = sigma * 0.6
    high = np.maximum(open_, close) * np.exp(wick * np.abs(rng.standard_normal(len(close))))
    low = np.minimum(open_, close) * np.exp(-wick * np.abs(rng.standard_normal(len(close))))
    surprise = np.abs(returns) / sigma
    surge_p = 0.01 + 0.12 * (surprise > 2.0)
    surge = np.where(rng.random(len(close)) < surge_p, rng.uniform(2.5, 5.0, len(close)), 1.0)
    volume = (
        spec.volume_base
        * np.exp(0.3 * rng.standard_normal(len(close)))
        * (sigma / spec.bar_vol) ** 0.8
        * (1.0 + 0.6 * surprise)
        * surge
    )
    d = spec.price_decimals
    step = 10.0**-spec.volume_decimals
    return {
        "open": np.round(open_, d),
        "high": np.round(high, d),
        "low": np.round(low, d),
        "close": np.round(close, d),
        "volume": np.maximum(np.round(volume, spec.volume_decimals), step),
    }


def _funding(rng: np.random.Generator, times_ms: np.ndarray, trend: np.ndarray) -> np.ndarray:
    """A new rate per 8-hour period (settles at 00/08/16 UTC), forward-filled over its candles.

    The rate leans with the trend (longs pay in up-trends), as perpetual funding does.
    """
    period = times_ms // _FUNDING_PERIOD_MS
    first_bar = np.concatenate(([True], period[1:] != period[:-1]))
    lean = trend[first_bar].astype(np.float64)
    rates = np.round(
        np.clip(0.0001 + 0.00012 * lean + 0.00006 * rng.standard_normal(lean.size), -0.002, 0.002), 8
    )
    return rates[np.cumsum(first_bar) - 1]


def _primary_spec(symbol: str) -> tuple[_LegSpec, float]:
    key = _symbol_key(symbol)
    price0 = 0.4 * 10.0 ** (0.75 * (key % 1000) / 1000.0)  # 0.4 … 2.25, fixed per symbol
    beta = 0.7 + 0.6 * ((key >> 10) % 1000) / 1000.0
    bar_vol = 0.0035 + 0.0015 * ((key >> 20) % 1000) / 1000.0
    decimals = 4 - math.floor(math.log10(price0))  # ~5 significant digits, like Binance ticks
    return _LegSpec(price0, bar_vol, 0.0008, 2.0e6 / price0, decimals, 1), beta


_BTC = _LegSpec(60_000.0, 0.0025, 0.0002, 400.0, 1, 3)
_ETH = _LegSpec(3_000.0, 0.0018, 0.0002, 9_000.0, 2, 3)


def _start_ms(start: str) -> int:
    ts = pd.Timestamp(start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.floor("15min").value // 1_000_000)


def synth_market(
    days: int = 120, seed: int = 7, *, symbol: str = "XRPUSDT", start: str = "2025-01-01"
) -> pd.DataFrame:
    """Synthetic 15-minute market for ``symbol`` in the data schema (all candles closed).

    BTC/ETH depend on ``seed`` only, like the real files where every symbol shares the same
    BTC/ETH candles; the primary depends on ``seed`` and the symbol.
    """
    if days < 1:
        raise ValueError(f"days={days}: need at least one day")
    n = int(days) * BARS_PER_DAY
    times = _start_ms(start) + BAR_MS * np.arange(n, dtype=np.int64)
    common = np.random.default_rng([int(seed), 0xB7C])
    own = np.random.default_rng([int(seed), _symbol_key(symbol)])
    zeros = np.zeros(n)

    btc_r, btc_s = _garch_path(_fat_tails(common, n), _BTC.bar_vol, _BTC.reversion, zeros, zeros)
    eth_r, eth_s = _garch_path(_fat_tails(common, n), _ETH.bar_vol, _ETH.reversion, 1.1 * btc_r, zeros)
    spec, beta = _primary_spec(symbol)
    trend = _regimes(own, n)
    drift = trend * (0.12 * spec.bar_vol)
    prim_r, prim_s = _garch_path(_fat_tails(own, n), spec.bar_vol, spec.reversion, beta * btc_r, drift)

    cols: dict[str, np.ndarray] = {}
    cols.update(_candles(own, prim_r, prim_s, spec))
    for suffix, rng, r, s, leg in (("btc", common, btc_r, btc_s, _BTC), ("eth", common, eth_r, eth_s, _ETH)):
        cols.update({f"{k}_{suffix}": v for k, v in _candles(rng, r, s, leg).items()})
    oi = 0.25 * prim_r + 0.0015 * own.standard_normal(n)
    oi[0] = 0.0
    cols["oi_change"] = oi
    cols["funding_rate"] = _funding(own, times, trend)

    index = pd.DatetimeIndex(pd.to_datetime(times, unit="ms", utc=True), name=INDEX_NAME).as_unit("ms")
    return pd.DataFrame({c: cols[c].astype(np.float64) for c in ALL_COLUMNS}, index=index)
