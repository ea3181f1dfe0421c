"""The 26 model features of SPEC §4: ONE function for training, backtest and live.

Why one function: at the design point the live builder fed raw values to a model trained on rolling
z-scores (train/serve skew, SPEC §13 row 20). Here :func:`build_feature_frame` is the only feature
code. Training and the backtester call it on the full history; the live bot calls
:func:`live_feature_row`, which is literally the last row of the same function on the last
:data:`LIVE_WINDOW_BARS` candles. A parity test pins the two within 1e-9.

Two properties make that parity hold:

* **Bounded memory.** TA-Lib's EMA/Wilder recursions remember their seed forever, but the
  influence decays geometrically; :data:`LIVE_WINDOW_BARS` was chosen by measurement on the real
  data (``bench/bench_features.py`` / the parity test) so that the seed's trace is far below 1e-9
  after the 288-bar z-score windows are filled.
* **Window-content statistics.** Rolling z-scores are computed from per-block prefix sums whose
  blocks are anchored to the absolute bar number (open time // 15 min), not to the frame start.
  The statistics at ``t`` therefore depend only on a bounded history (< 2·W bars) and are
  bit-identical whether the frame starts years or a thousand bars earlier. pandas' rolling
  add/remove updates, by contrast, carry rounding from the whole history.

No look-ahead: every quantity at row ``t`` reads rows ``≤ t`` only (trailing windows, forward
fill, TA-Lib recursions), tested by truncating the market.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perpbot.config import SignalParams
from perpbot.data.market_arrays import MarketArrays
from perpbot.data.schema import BAR_MS, OHLCV
from perpbot.engine.context import CandleContext
from perpbot.errors import DataError
from perpbot.strategy.indicators import compute_indicators
from perpbot.strategy.signal import LONG, SHORT, rule_signal, side_from_code

if TYPE_CHECKING:  # pandas only where a frame is built or read: the backtest runs on arrays
    import pandas as pd

ColumnFn = Callable[[str], "np.ndarray | None"]
FEATURE_SCHEMA_VERSION = 1

FEATURE_COLS: tuple[str, ...] = (
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
)
SIGNAL_STRENGTH_INDEX = FEATURE_COLS.index("signal_strength")
SIDE_INDEX = FEATURE_COLS.index("side")
OPTIONAL_FEATURES: tuple[str, ...] = ("oi_change", "funding_rate", "oi_change_ma5", "oi_price_spread")
CORRELATION_FEATURES: tuple[str, ...] = FEATURE_COLS[13:21]
# Features that must be finite after warm-up whatever the market file holds.
BASE_FEATURES: tuple[str, ...] = tuple(
    c for c in FEATURE_COLS if c not in OPTIONAL_FEATURES and c not in CORRELATION_FEATURES
)
EXTRA_COLS: tuple[str, ...] = ("signal", "long_score", "short_score", "vol_surge", "atr", "close", "adx_raw")
FRAME_COLS: tuple[str, ...] = FEATURE_COLS + EXTRA_COLS

Z_WINDOW = 288  # 3 days of 15-minute bars
Z_WINDOW_MICRO = 96  # 1 day, OI / funding
Z_STD_FLOOR = 1e-8
ZSCORE_ROWS_PER_PASS = 1  # rows of one rolling_zscore pass: bounds its temporaries (issue 13, memory)
EPS = 1e-8  # SPEC §4 epsilon in bb_pct, atr_pct and vol_ratio denominators
OI_MA_WINDOW = 5
RETURN_LAGS = (1, 3, 5)

# First row whose non-optional features are all finite on complete data: EMA50 (ema_align) has
# the longest lookback (49); MACD(12,26,9) needs 33, the Stochastic RSI 31, ADX 27.
FEATURE_WARMUP_BARS = 49

# Candles the live bot keeps and feeds to ``live_feature_row``. Measured on the real data (three
# symbols, 50 rows each, every frame column; ``bench/bench_features.py``): max |live − full| is
# 1.7e-9 at 600 bars (fails the 1e-9 requirement: ADX's double Wilder smoothing converges
# slowest), ~1e-12 at 700, ~8e-15 at 800, ~1.6e-15 at 1000 and 0 at 1500. 1000 keeps a wide margin
# (the seed's trace decays ~×1/1700 per 100 bars) and fits one 1500-kline request.
LIVE_WINDOW_BARS = 1000


def feature_schema_hash() -> str:
    """sha256 of the canonical JSON of version + ordered names; stored with every model."""
    payload = json.dumps(
        {"version": FEATURE_SCHEMA_VERSION, "features": list(FEATURE_COLS)},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- rolling statistics


def rolling_zscore(x: np.ndarray, window: int, anchor: int = 0) -> np.ndarray:
    """Trailing rolling z-score of each row of ``x`` (shape ``(n,)`` or ``(k, n)``), SPEC §4.

    ``(x_t − mean)/max(std, 1e-8)`` over the last ``window`` values, population std,
    ``min_periods=1``, NaNs skipped in the statistics and preserved at ``t``.

    Implementation: per-block inclusive prefix sums of (count, sum, sum of squares) with blocks of
    exactly ``window`` bars whose boundaries sit at absolute bar numbers ≡ 0 (mod window); ``anchor``
    is the absolute bar number of ``x[..., 0]``. With block length = window, the window ending at
    offset ``o`` of block ``b`` is ``prefix[b, o] + (total[b−1] − prefix[b−1, o])``: every operand
    depends on blocks ``b−1`` and ``b`` only, so the result is a function of a bounded history and
    not of where the series starts (the parity requirement); cost is O(n) per feature.
    """
    arr = np.asarray(x, dtype=np.float64)
    squeeze = arr.ndim == 1
    data = arr[None, :] if squeeze else arr
    k, n = data.shape
    if n == 0:
        return arr.copy()
    if k > ZSCORE_ROWS_PER_PASS:
        # Rows are independent (every operation below is per row), so a few at a time give the
        # same numbers with a fraction of the temporaries (~10 arrays of k × n floats).
        out = np.empty_like(data)
        for i in range(0, k, ZSCORE_ROWS_PER_PASS):
            out[i : i + ZSCORE_ROWS_PER_PASS] = rolling_zscore(
                data[i : i + ZSCORE_ROWS_PER_PASS], window, anchor
            )
        return out
    pad = int(anchor) % window
    nb = -(-(pad + n) // window)
    valid = ~np.isnan(data)
    xv = np.where(valid, data, 0.0)
    # (count, sum, sum of squares) laid out as (3, k, block, offset); in-place to limit temporaries.
    acc = np.zeros((3, k, nb * window))
    acc[0, :, pad : pad + n] = valid
    acc[1, :, pad : pad + n] = xv
    np.multiply(xv, xv, out=acc[2, :, pad : pad + n])
    blocks = acc.reshape(3, k, nb, window)
    np.cumsum(blocks, axis=3, out=blocks)
    if nb > 1:
        tail = blocks[:, :, :-1, -1:] - blocks[:, :, :-1, :]  # block b−1 after offset o
        blocks[:, :, 1:, :] += tail
    cnt, s1, s2 = acc[:, :, pad : pad + n]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / cnt
        var = s2 / cnt
        var -= mean * mean
        np.maximum(var, 0.0, out=var)
        std = np.sqrt(var, out=var)
        z = (data - mean) / np.maximum(std, Z_STD_FLOOR, out=std)
    return z[0] if squeeze else z


def rolling_nanmean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` values, NaNs skipped, ``min_periods=1`` (NaN when none valid).

    Summed in a fixed order from shifted copies, so the value at ``t`` depends on the window only.
    Meant for short windows (the OI MA5).
    """
    n = len(x)
    total = np.zeros(n)
    count = np.zeros(n)
    valid = ~np.isnan(x)
    xv = np.where(valid, x, 0.0)
    for lag in range(min(window, n)):
        total[lag:] += xv[: n - lag]
        count[lag:] += valid[: n - lag]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1.0), np.nan)


# --------------------------------------------------------------------------- elementary features


def pct_change_filled(close: np.ndarray, lag: int) -> np.ndarray:
    """``close_t / close_{t−lag} − 1`` with NaN (history too short, missing data) and zero bases → 0."""
    out = np.zeros_like(close)
    if len(close) > lag:
        base, cur = close[:-lag], close[lag:]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(base != 0.0, cur / np.where(base != 0.0, base, 1.0) - 1.0, 0.0)
        out[lag:] = np.where(np.isfinite(r), r, 0.0)
    return out


def guarded_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num/den``, 0 where the denominator is 0 (SPEC §4 relative strength), never ±inf."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        r = np.where(den != 0.0, num / np.where(den != 0.0, den, 1.0), 0.0)
    return np.where(np.isfinite(r), r, 0.0)


def ffill(x: np.ndarray) -> np.ndarray:
    """Forward fill NaNs (leading NaNs stay NaN); trailing-only, so no look-ahead."""
    idx = np.where(np.isnan(x), -1, np.arange(len(x)))
    np.maximum.accumulate(idx, out=idx)
    return np.where(idx >= 0, x[np.maximum(idx, 0)], np.nan)


def zero_to_nan(x: np.ndarray) -> np.ndarray:
    """Exact zeros mean "not recorded" in the OI/funding columns (SPEC §4): make them missing."""
    return np.where(x == 0.0, np.nan, x)


def ema_alignment(ind: dict[str, np.ndarray]) -> np.ndarray:
    """+1 for ema9 > ema21 > ema50, −1 for the reverse stack, 0 otherwise; NaN during EMA warm-up."""
    e9, e21, e50 = ind["ema9"], ind["ema21"], ind["ema50"]
    with np.errstate(invalid="ignore"):
        up = (e9 > e21) & (e21 > e50)
        down = (e9 < e21) & (e21 < e50)
    out = up.astype(np.float64) - down.astype(np.float64)
    out[np.isnan(e9) | np.isnan(e21) | np.isnan(e50)] = np.nan
    return out


def _column(market: pd.DataFrame, name: str) -> np.ndarray | None:
    if name not in market.columns:
        return None
    return np.ascontiguousarray(market[name].to_numpy(dtype=np.float64, na_value=np.nan))


def _epoch_ms(ts: pd.Timestamp) -> int:
    """Milliseconds since the epoch, whatever the timestamp's unit."""
    import pandas as pd

    return int(pd.DatetimeIndex([ts]).as_unit("ms").asi8[0])


def _bar_anchor(index: pd.Index) -> int:
    """Absolute bar number of the first row (open time // 15 min); 0 without a time index."""
    import pandas as pd

    if isinstance(index, pd.DatetimeIndex) and len(index):
        return int(index[:1].as_unit("ms").asi8[0]) // BAR_MS
    return 0


def _source(market: pd.DataFrame | MarketArrays) -> tuple[ColumnFn, int]:
    """(column getter, absolute bar number of the first row) of a frame or of arrays."""
    if isinstance(market, MarketArrays):
        anchor = int(market.open_time_ms[0]) // BAR_MS if len(market) else 0
        return market.column, anchor
    return (lambda name: _column(market, name)), _bar_anchor(market.index)


# --------------------------------------------------------------------------- the frame


def _micro_features(column: ColumnFn, ret_1_z: np.ndarray, n: int, anchor: int) -> dict[str, np.ndarray]:
    """Features 22–25 (OI, funding). Missing columns or all-zero data give NaN, never an error."""
    oi_raw = column("oi_change")
    fr_raw = column("funding_rate")
    oi = zero_to_nan(oi_raw) if oi_raw is not None else np.full(n, np.nan)
    fr = zero_to_nan(ffill(fr_raw)) if fr_raw is not None else np.full(n, np.nan)
    oi_ma5 = rolling_nanmean(oi, OI_MA_WINDOW)
    z = rolling_zscore(np.vstack([oi, fr, oi_ma5]), Z_WINDOW_MICRO, anchor)
    return {
        "oi_change": z[0],
        "funding_rate": z[1],
        "oi_change_ma5": z[2],
        "oi_price_spread": z[0] - ret_1_z,
    }


def _z288_features(
    column: ColumnFn, ind: dict[str, np.ndarray], close: np.ndarray, volume: np.ndarray, anchor: int
) -> dict[str, np.ndarray]:
    """Every W=288 z-scored feature, stacked into one rolling pass for speed."""
    n = len(close)
    names = ["atr_pct", "vol_ratio", "ret_1", "ret_3", "ret_5", "adx"]
    rows = [
        ind["atr"] / (close + EPS),
        volume / (ind["vol_ma20"] + EPS),
        *(pct_change_filled(close, lag) for lag in RETURN_LAGS),
        ind["adx"],
    ]
    btc, eth = column("close_btc"), column("close_eth")
    has_corr = btc is not None and eth is not None
    if has_corr:
        btc_r = [pct_change_filled(btc, lag) for lag in RETURN_LAGS]
        eth_r = [pct_change_filled(eth, lag) for lag in RETURN_LAGS]
        names += [*CORRELATION_FEATURES]
        rows += [*btc_r, *eth_r, guarded_ratio(rows[2], btc_r[0]), guarded_ratio(rows[2], eth_r[0])]
    z = rolling_zscore(np.vstack(rows), Z_WINDOW, anchor)
    out = dict(zip(names, z, strict=True))
    if not has_corr:
        out.update({name: np.full(n, np.nan) for name in CORRELATION_FEATURES})
    return out


def feature_arrays(market: pd.DataFrame | MarketArrays, params: SignalParams) -> dict[str, np.ndarray]:
    """The computation behind :func:`build_feature_frame`: one array per :data:`FRAME_COLS` name.

    Split out so the live path can take the last element of each array without paying for a
    DataFrame, and the backtest can run on ``MarketArrays`` (no pandas); all run exactly this code.
    """
    column, anchor = _source(market)
    ohlcv = [column(name) for name in OHLCV]
    missing = [name for name, col in zip(OHLCV, ohlcv, strict=True) if col is None]
    if missing:
        raise DataError(f"market frame lacks required column(s) {missing} for the feature builder")
    o, h, lo, c, v = (np.ascontiguousarray(col, dtype=np.float64) for col in ohlcv)
    n = len(c)
    ind = compute_indicators(o, h, lo, c, v)
    sig = rule_signal(ind, c, v, params)

    with np.errstate(invalid="ignore", divide="ignore"):
        bb_pct = (c - ind["bb_lower"]) / (ind["bb_upper"] - ind["bb_lower"] + EPS)
    z288 = _z288_features(column, ind, c, v, anchor)
    strength = np.where(sig.signal == LONG, sig.long_score, np.where(sig.signal == SHORT, sig.short_score, 0))
    cols: dict[str, np.ndarray] = {
        "rsi": ind["rsi"],
        "macd_hist": ind["macd_hist"],
        "bb_pct": bb_pct,
        "ema_align": ema_alignment(ind),
        "stoch_k": ind["stoch_k"],
        "stoch_d": ind["stoch_d"],
        **z288,
        "signal_strength": strength.astype(np.float64),
        "side": (sig.signal == LONG).astype(np.float64),
        **_micro_features(column, z288["ret_1"], n, anchor),
    }
    data: dict[str, np.ndarray] = {name: cols[name] for name in FEATURE_COLS}
    data.update(
        signal=sig.signal,
        long_score=sig.long_score,
        short_score=sig.short_score,
        vol_surge=sig.vol_surge,
        atr=ind["atr"],
        close=c,
        adx_raw=ind["adx"],
    )
    return data


def build_feature_frame(market: pd.DataFrame, params: SignalParams) -> pd.DataFrame:
    """The SPEC §4 training definitions on every row of ``market`` (index preserved).

    Columns: :data:`FEATURE_COLS`, then ``signal`` (int8), ``long_score``/``short_score`` (int8),
    ``vol_surge`` (bool), raw ``atr``, ``close``, ``adx_raw`` (float64). Signal rows carry their
    side's score and side (1.0 LONG / 0.0 SHORT); HOLD rows 0 and 0. NaN appears only in warm-up
    rows (< :data:`FEATURE_WARMUP_BARS`), the four OI/funding features (zeros = not recorded) and
    the correlation group when ``close_btc``/``close_eth`` are absent. Never ±inf.
    """
    import pandas as pd

    return pd.DataFrame(feature_arrays(market, params), index=market.index, copy=False)


def live_feature_row(window: pd.DataFrame, params: SignalParams) -> pd.Series:
    """The live bot's features: the last row of :func:`build_feature_frame` on the last
    :data:`LIVE_WINDOW_BARS` closed candles, as a float64 Series (index :data:`FRAME_COLS`, named
    by the candle's timestamp; ``signal``/scores/``vol_surge`` as 1.0/0.0/−1.0 numbers).

    Passing fewer candles works but loses parity with training until the window is full.
    """
    if len(window) == 0:
        raise DataError("live_feature_row needs at least one candle")
    import pandas as pd

    tail = window.iloc[-LIVE_WINDOW_BARS:]
    arrays = feature_arrays(tail, params)
    values = np.array([arrays[name][-1] for name in FRAME_COLS], dtype=np.float64)
    return pd.Series(values, index=pd.Index(FRAME_COLS), name=tail.index[-1])


# --------------------------------------------------------------------------- contexts


@dataclass(frozen=True, slots=True)
class FrameIndex:
    """Column positions of a feature frame, resolved once per frame (context_from_row is hot)."""

    features: slice | np.ndarray
    close: int
    atr: int
    signal: int
    long_score: int
    short_score: int
    rsi: int
    macd_hist: int
    adx_raw: int
    vol_surge: int

    @classmethod
    def from_columns(cls, columns: pd.Index | list[str] | tuple[str, ...]) -> FrameIndex:
        pos = {name: i for i, name in enumerate(columns)}
        missing = [c for c in FRAME_COLS if c not in pos]
        if missing:
            raise ValueError(f"not a feature frame: missing columns {missing}")
        feat = np.array([pos[c] for c in FEATURE_COLS])
        contiguous = bool(np.all(np.diff(feat) == 1))
        return cls(
            features=slice(int(feat[0]), int(feat[-1]) + 1) if contiguous else feat,
            close=pos["close"],
            atr=pos["atr"],
            signal=pos["signal"],
            long_score=pos["long_score"],
            short_score=pos["short_score"],
            rsi=pos["rsi"],
            macd_hist=pos["macd_hist"],
            adx_raw=pos["adx_raw"],
            vol_surge=pos["vol_surge"],
        )


@dataclass(frozen=True, slots=True)
class FrameArrays:
    """A feature frame as plain arrays for fast iteration (backtester: ~10^5 contexts)."""

    values: np.ndarray  # (n, len(columns)) float64
    open_time_ms: np.ndarray  # (n,) int64
    index: FrameIndex


def contexts_arrays(frame: pd.DataFrame) -> FrameArrays:
    """Convert a feature frame (DatetimeIndex of open times) once; then call ``context_from_row``."""
    import pandas as pd

    if not isinstance(frame.index, pd.DatetimeIndex):
        raise ValueError("feature frame needs a DatetimeIndex of candle open times")
    return FrameArrays(
        values=np.ascontiguousarray(frame.to_numpy(dtype=np.float64)),
        open_time_ms=frame.index.as_unit("ms").asi8.astype(np.int64),
        index=FrameIndex.from_columns(frame.columns),
    )


def context_from_row(symbol: str, open_time_ms: int, values: np.ndarray, index: FrameIndex) -> CandleContext:
    """Build the bot's :class:`CandleContext` from one float64 row of a feature frame.

    ``features`` is a copy of the 26 values (the frame stays immutable to the bot); the
    side-dependent ``signal_strength``/``side`` are re-filled per proposed side by
    ``CandleContext.features_for``.
    """
    return CandleContext(
        symbol=symbol,
        open_time_ms=int(open_time_ms),
        close=float(values[index.close]),
        atr=float(values[index.atr]),
        signal=side_from_code(int(values[index.signal])),
        long_score=int(values[index.long_score]),
        short_score=int(values[index.short_score]),
        rsi=float(values[index.rsi]),
        macd_hist=float(values[index.macd_hist]),
        adx=float(values[index.adx_raw]),
        vol_surge=bool(values[index.vol_surge]),
        features=values[index.features].copy(),
    )


def iter_contexts(symbol: str, frame: pd.DataFrame) -> Iterator[CandleContext]:
    """Every row of a feature frame as a context, in time order."""
    arrays = contexts_arrays(frame)
    for i in range(arrays.values.shape[0]):
        yield context_from_row(symbol, int(arrays.open_time_ms[i]), arrays.values[i], arrays.index)


def live_context(symbol: str, window: pd.DataFrame, params: SignalParams) -> CandleContext:
    """The live/paper bot's context for the last closed candle of ``window``."""
    import pandas as pd

    row = live_feature_row(window, params)
    index = FrameIndex.from_columns(row.index)
    open_ms = _epoch_ms(row.name) if isinstance(row.name, pd.Timestamp) else 0
    return context_from_row(symbol, open_ms, row.to_numpy(dtype=np.float64), index)
