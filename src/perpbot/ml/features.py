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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perpbot.config import SignalParams
from perpbot.data.market_arrays import MarketArrays
from perpbot.data.schema import BAR_MS, OHLCV
from perpbot.engine.context import CandleContext
from perpbot.errors import DataError
from perpbot.ml.contexts import (  # noqa: F401  (re-exported)
    FrameArrays,
    FrameIndex,
    context_from_row,
    contexts_arrays,
    iter_contexts,
)
from perpbot.ml.elementary import (  # used here; tests patch them through this module
    ema_alignment,
    ffill,
    guarded_ratio,
    pct_change_filled,
    zero_to_nan,
)
from perpbot.ml.feature_names import (  # noqa: F401  (re-exported)
    BASE_FEATURES,
    CORRELATION_FEATURES,
    EXTRA_COLS,
    FEATURE_COLS,
    FEATURE_SCHEMA_VERSION,
    FRAME_COLS,
    OPTIONAL_FEATURES,
    SIDE_INDEX,
    SIGNAL_STRENGTH_INDEX,
)
from perpbot.ml.rolling import (  # noqa: F401  (re-exported: the feature code's public names)
    Z_STD_FLOOR,
    ZSCORE_ROWS_PER_PASS,
    exact_suffix_start,
    rolling_nanmean,
    rolling_zscore,
    rolling_zscore_last,
)
from perpbot.strategy.indicators import compute_indicators
from perpbot.strategy.signal import LONG, SHORT, SignalFrame, rule_signal

if TYPE_CHECKING:  # pandas only where a frame is built or read: the backtest runs on arrays
    import pandas as pd

ColumnFn = Callable[[str], "np.ndarray | None"]
Z_WINDOW = 288  # 3 days of 15-minute bars
Z_WINDOW_MICRO = 96  # 1 day, OI / funding
EPS = 1e-8  # SPEC §4 epsilon in bb_pct, atr_pct and vol_ratio denominators
OI_MA_WINDOW = 5
RETURN_LAGS = (1, 3, 5)
SIGNAL_ROWS = 2  # rows the rule signal of the last candle reads: its own and the one before

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


Row = Callable[[], np.ndarray]
"""One input row of :func:`_zscored`, computed when it is z-scored (issue 13: not all at once)."""


def _zscored(rows: list[Row], window: int, anchor: int, start: int | None) -> np.ndarray:
    """``rolling_zscore`` of the stacked rows. ``start`` (the live path, ``None`` in batch): the
    rows are the suffix from ``start`` = ``rolling.exact_suffix_start``, which gives the last
    column bit for bit; only that column is returned (``rolling_zscore_last``: the same
    operations on the two blocks it reads), every row in one pass.

    In batch each row is computed, z-scored into the output and dropped before the next (rows are
    independent in ``rolling_zscore``, so the numbers are those of the stacked pass): the inputs
    and their stacked copy are never all alive next to the output (issue 13, ~7 MiB a
    symbol-year)."""
    if start is None:
        first = rows[0]()
        out = np.empty((len(rows), first.size))
        out[0] = rolling_zscore(first, window, anchor)
        del first
        for i, make in enumerate(rows[1:], 1):
            out[i] = rolling_zscore(make(), window, anchor)
        return out
    stacked = np.vstack([make() for make in rows])
    return rolling_zscore_last(stacked, window, anchor + start)[:, None]


def _returns(x: np.ndarray, lag: int, start: int) -> np.ndarray:
    """``pct_change_filled(x, lag)[start:]``, reading only the rows it needs (element-wise, so
    the values are the same)."""
    base = max(0, start - lag)
    return pct_change_filled(x[..., base:], lag)[..., start - base :]


def _micro_features(
    column: ColumnFn, ret_1_z: np.ndarray, n: int, anchor: int, last_only: bool = False
) -> dict[str, np.ndarray]:
    """Features 22–25 (OI, funding). Missing columns or all-zero data give NaN, never an error."""
    oi_raw = column("oi_change")
    fr_raw = column("funding_rate")
    oi = zero_to_nan(oi_raw) if oi_raw is not None else np.full(n, np.nan)
    fr = zero_to_nan(ffill(fr_raw)) if fr_raw is not None else np.full(n, np.nan)
    oi_ma5 = rolling_nanmean(oi, OI_MA_WINDOW)
    start = exact_suffix_start(n, anchor, Z_WINDOW_MICRO) if last_only else None
    s = start or 0
    z = _zscored([lambda: oi[s:], lambda: fr[s:], lambda: oi_ma5[s:]], Z_WINDOW_MICRO, anchor, start)
    return {
        "oi_change": z[0],
        "funding_rate": z[1],
        "oi_change_ma5": z[2],
        "oi_price_spread": z[0] - ret_1_z,
    }


def _z288_features(
    column: ColumnFn,
    ind: dict[str, np.ndarray],
    close: np.ndarray,
    volume: np.ndarray,
    anchor: int,
    start: int | None = None,
) -> dict[str, np.ndarray]:
    """Every W=288 z-scored feature, stacked into one rolling pass for speed (``start``: see
    :func:`_zscored`; every input row is then computed on that suffix only)."""
    s = start or 0
    names = ["atr_pct", "vol_ratio", "ret_1", "ret_3", "ret_5", "adx"]
    btc, eth = column("close_btc"), column("close_eth")
    has_corr = btc is not None and eth is not None
    prices = [close, btc, eth] if btc is not None and eth is not None else [close]
    if start is None:  # batch: each return when its row is z-scored (``_zscored``)

        def ret(k: int, lag: int) -> np.ndarray:
            return _returns(prices[k], lag, s)
    else:  # live: each lag over the stacked closes at once, a few hundred values each
        stacked = np.vstack(prices)
        per_lag = {lag: _returns(stacked, lag, s) for lag in RETURN_LAGS}

        def ret(k: int, lag: int) -> np.ndarray:
            return per_lag[lag][k]

    def returns(k: int, lag: int) -> Row:
        return lambda: ret(k, lag)

    ret_1 = ret(0, RETURN_LAGS[0])  # kept: the relative-strength rows divide by it
    rows: list[Row] = [
        lambda: ind["atr"][s:] / (close[s:] + EPS),
        lambda: volume[s:] / (ind["vol_ma20"][s:] + EPS),
        lambda: ret_1,
        *(returns(0, lag) for lag in RETURN_LAGS[1:]),
        lambda: ind["adx"][s:],
    ]
    if has_corr:
        btc_1, eth_1 = ret(1, RETURN_LAGS[0]), ret(2, RETURN_LAGS[0])
        names += [*CORRELATION_FEATURES]
        rows += [
            lambda: btc_1,
            *(returns(1, lag) for lag in RETURN_LAGS[1:]),
            lambda: eth_1,
            *(returns(2, lag) for lag in RETURN_LAGS[1:]),
            lambda: guarded_ratio(ret_1, btc_1),
            lambda: guarded_ratio(ret_1, eth_1),
        ]
    z = _zscored(rows, Z_WINDOW, anchor, start)
    out = dict(zip(names, z, strict=True))
    if not has_corr:
        out.update({name: np.full(z.shape[1], np.nan) for name in CORRELATION_FEATURES})
    return out


@dataclass(frozen=True, slots=True, eq=False)
class MarketPart:
    """Every :data:`FRAME_COLS` array except the four OI/funding features (the first half of
    :func:`feature_arrays`): what the candles alone decide, the rule signal included. The live
    runtime computes it while the close's OI and funding reads are still in flight."""

    data: dict[str, np.ndarray]
    ret_1_z: np.ndarray
    n: int
    anchor: int
    last_only: bool


@dataclass(frozen=True, slots=True, eq=False)
class SignalStage:
    """The first step of :func:`market_features`: indicators and the rule signal, the cheap part
    the decision hangs on (the live runtime starts its pre-entry reads once it knows there is a
    signal, then lets the z-scores run while they are in flight)."""

    column: ColumnFn
    anchor: int
    n: int
    start: int | None  # the exact suffix of the z-scores (``last_only``), None in batch
    ind: dict[str, np.ndarray]
    close: np.ndarray
    volume: np.ndarray
    sig: SignalFrame  # every row in batch, the last row only with ``last_only``

    @property
    def signal(self) -> int:
        """The last row's rule signal code (``LONG`` / ``SHORT`` / 0)."""
        return int(self.sig.signal[-1]) if len(self.sig) else 0


def signal_stage(
    market: pd.DataFrame | MarketArrays, params: SignalParams, *, last_only: bool = False
) -> SignalStage:
    """Indicators and rule signal of ``market`` (the first step of :func:`market_features`)."""
    column, anchor = _source(market)
    ohlcv = [column(name) for name in OHLCV]
    missing = [name for name, col in zip(OHLCV, ohlcv, strict=True) if col is None]
    if missing:
        raise DataError(f"market frame lacks required column(s) {missing} for the feature builder")
    o, h, lo, c, v = (np.ascontiguousarray(col, dtype=np.float64) for col in ohlcv)
    n = len(c)
    start = exact_suffix_start(n, anchor, Z_WINDOW) if last_only else None
    if start is None:
        ind = compute_indicators(o, h, lo, c, v)
    else:  # the z-scores read ATR, ADX and the volume MA on the suffix, the rest its last rows
        ind = compute_indicators(o, h, lo, c, v, tail=n - start, last_rows=SIGNAL_ROWS)
    if last_only:  # the last row only; it reads its own row and the one before (MACD cross)
        sig = rule_signal(
            {k: x[-SIGNAL_ROWS:] for k, x in ind.items()}, c[-SIGNAL_ROWS:], v[-SIGNAL_ROWS:], params
        )
        sig = SignalFrame(
            *(x[-1:] for x in (sig.signal, sig.long_score, sig.short_score, sig.vol_surge, sig.hold_reason))
        )
    else:
        sig = rule_signal(ind, c, v, params)
    return SignalStage(column, anchor, n, start, ind, c, v, sig)


def market_features(
    market: pd.DataFrame | MarketArrays,
    params: SignalParams,
    *,
    last_only: bool = False,
    stage: SignalStage | None = None,
) -> MarketPart:
    """The candle-only half of :func:`feature_arrays` (see there for ``last_only``); ``stage``:
    its first step, when the caller already computed it with the same arguments."""
    st = stage if stage is not None else signal_stage(market, params, last_only=last_only)
    column, anchor, n, start, ind, c, sig = st.column, st.anchor, st.n, st.start, st.ind, st.close, st.sig
    z288 = _z288_features(column, ind, c, st.volume, anchor, start)
    if last_only:  # one row from here on
        ind = {k: x[-1:] for k, x in ind.items()}
        c = c[-1:]

    with np.errstate(invalid="ignore", divide="ignore"):
        bb_pct = (c - ind["bb_lower"]) / (ind["bb_upper"] - ind["bb_lower"] + EPS)
    strength = np.where(sig.signal == LONG, sig.long_score, np.where(sig.signal == SHORT, sig.short_score, 0))
    data: dict[str, np.ndarray] = {
        "rsi": ind["rsi"],
        "macd_hist": ind["macd_hist"],
        "bb_pct": bb_pct,
        "ema_align": ema_alignment(ind),
        "stoch_k": ind["stoch_k"],
        "stoch_d": ind["stoch_d"],
        **z288,
        "signal_strength": strength.astype(np.float64),
        "side": (sig.signal == LONG).astype(np.float64),
        "signal": sig.signal,
        "long_score": sig.long_score,
        "short_score": sig.short_score,
        "vol_surge": sig.vol_surge,
        "atr": ind["atr"],
        "close": c,
        "adx_raw": ind["adx"],
    }
    return MarketPart(data, z288["ret_1"], n, anchor, last_only)


def with_micro_features(part: MarketPart, column: ColumnFn) -> dict[str, np.ndarray]:
    """The second half of :func:`feature_arrays`: the OI/funding features from ``column``'s
    ``oi_change``/``funding_rate``, merged in :data:`FRAME_COLS` order."""
    micro = _micro_features(column, part.ret_1_z, part.n, part.anchor, part.last_only)
    merged = {**part.data, **micro}
    return {name: merged[name] for name in FRAME_COLS}


def feature_arrays(
    market: pd.DataFrame | MarketArrays, params: SignalParams, *, last_only: bool = False
) -> dict[str, np.ndarray]:
    """The computation behind :func:`build_feature_frame`: one array per :data:`FRAME_COLS` name.

    Split out so the live path can take the last element of each array without paying for a
    DataFrame, and the backtest can run on ``MarketArrays`` (no pandas); all run exactly this code.

    ``last_only`` (the live bot): arrays of one element, the last row, bit-identical to the last
    element of the full computation (tested). The recursive indicators still run over the whole
    input; the windowed means and z-scores only over the suffix the last row depends on.
    """
    part = market_features(market, params, last_only=last_only)
    return with_micro_features(part, _source(market)[0])


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
    arrays = feature_arrays(tail, params, last_only=True)
    values = np.array([arrays[name][-1] for name in FRAME_COLS], dtype=np.float64)
    return pd.Series(values, index=pd.Index(FRAME_COLS), name=tail.index[-1])


# --------------------------------------------------------------------------- contexts


def live_context(symbol: str, window: pd.DataFrame, params: SignalParams) -> CandleContext:
    """The live/paper bot's context for the last closed candle of ``window``."""
    import pandas as pd

    row = live_feature_row(window, params)
    index = FrameIndex.from_columns(row.index)
    open_ms = _epoch_ms(row.name) if isinstance(row.name, pd.Timestamp) else 0
    return context_from_row(symbol, open_ms, row.to_numpy(dtype=np.float64), index)
