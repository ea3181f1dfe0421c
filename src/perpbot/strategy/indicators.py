"""Technical indicators of SPEC §3, computed with TA-Lib on closed candles.

TA-Lib is the reference implementation for this project (SPEC §3): models are trained on exactly
these numbers, so every consumer (rule signal, features, backtest, live) must get its indicators
from :func:`compute_indicators` and nowhere else.

The recursive indicators (RSI, MACD, EMAs, ATR, ADX) are TA-Lib's. The plain windowed means
(Bollinger mid/σ, volume MA, the Stochastic RSI's K and D) are computed from each window's contents
by :func:`window_mean_std` instead of TA-Lib's running sums: same numbers to ~1e-12, but no
history-dependent rounding residue (the live/full parity requirement) and exact results on flat
windows. The Stochastic RSI is composed by hand because ``talib.STOCHRSI`` is a different
definition (see :func:`stoch_rsi`).

All outputs are float64 arrays aligned with the inputs; warm-up rows are NaN (TA-Lib lookbacks).
"""

from __future__ import annotations

import functools
import sys
from types import ModuleType, SimpleNamespace

import numpy as np
from numpy.typing import ArrayLike


def _import_talib() -> ModuleType:
    """TA-Lib, imported without letting it import pandas.

    TA-Lib's ``__init__`` imports pandas (when installed) only to accept pandas Series as inputs;
    every call in this module passes numpy arrays. pandas costs a backtest ~80 MiB of memory and
    a few tenths of a second of start-up (issue 13), on a path that otherwise needs no pandas. So
    when nothing has imported pandas yet, it is marked absent for the duration of TA-Lib's import
    (TA-Lib then simply wraps nothing); whoever imports pandas afterwards gets it as usual.
    """
    if "talib" in sys.modules or "pandas" in sys.modules:
        import talib

        return talib
    sys.modules["pandas"] = None  # type: ignore[assignment]  # the import system's "absent" mark
    try:
        import talib
    finally:
        if "pandas" in sys.modules and sys.modules["pandas"] is None:
            del sys.modules["pandas"]
    return talib


TALIB_FUNCTIONS = ("MACD", "RSI", "EMA", "ATR", "ADX", "MIN", "MAX")  # the ones called here


@functools.cache
def _talib() -> SimpleNamespace:
    """TA-Lib's functions (:data:`TALIB_FUNCTIONS`) on first use: a backtest served by its input
    cache computes no indicator and never imports it (issue 13, start-up).

    Unwrapped: when pandas is imported before TA-Lib, TA-Lib wraps every function so that it also
    takes pandas Series, and the wrapper type-checks each argument on every call (~10 µs; nine
    calls per candle and symbol on the live bot's decision path, before it knows whether there is
    a signal). Every call here passes float64 arrays, which the wrapper hands to the function it
    wraps unchanged, so that function (``__wrapped__``) returns the very same arrays."""
    talib = _import_talib()
    funcs = {name: getattr(talib, name) for name in TALIB_FUNCTIONS}
    return SimpleNamespace(**{name: getattr(f, "__wrapped__", f) for name, f in funcs.items()})


INDICATOR_KEYS = (
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_mid",
    "bb_lower",
    "ema9",
    "ema21",
    "ema50",
    "atr",
    "stoch_k",
    "stoch_d",
    "adx",
    "vol_ma20",
)

RSI_PERIOD = 14  # also the Stochastic RSI's RSI length (SPEC §3)
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_PERIOD, BB_DEV = 20, 2.0
ATR_PERIOD = 14
ADX_PERIOD = 14
STOCH_WINDOW, STOCH_K, STOCH_D = 14, 3, 3
VOL_MA_PERIOD = 20
STOCH_FLAT_RANGE = 1e-9  # RSI points; a narrower 14-bar RSI range is rounding noise (see stoch_rsi)
WINDOW_ROWS_PER_PASS = 4096  # rows of one window_mean_std block: bounds its temporaries (issue 13)


def _as_f64(x: ArrayLike) -> np.ndarray:
    """TA-Lib needs contiguous float64; converting once here keeps every call cheap and safe."""
    return np.ascontiguousarray(np.asarray(x, dtype=np.float64))


def _windows(seg: np.ndarray, period: int) -> np.ndarray:
    """``sliding_window_view(seg, period)`` of a 1-D array: the same read-only view, built
    directly. Why: ``sliding_window_view`` checks and normalises its arguments in Python (~10 µs a
    call), as much as the arithmetic of the few rows the live bot needs, four times a candle."""
    step = seg.strides[0]
    shape = (max(len(seg) - period + 1, 0), period)
    if not seg.flags.c_contiguous:
        return np.lib.stride_tricks.as_strided(seg, shape=shape, strides=(step, step), writeable=False)
    # ``as_strided`` itself builds its view through an interface object in Python (~9 µs): the
    # ndarray constructor over the segment's buffer is the same view for ~3 µs.
    win = np.ndarray(shape, seg.dtype, buffer=seg, strides=(step, step))
    win.flags.writeable = False
    return win


def window_mean_std(
    x: np.ndarray, period: int, *, with_std: bool = True, tail: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean and population std over ``period`` values, from the window contents only.

    Why not ``talib.SMA``/``talib.BBANDS``: TA-Lib keeps running sums (add the new value, subtract
    the old one), so its output carries rounding residue from the whole history. That residue made
    the live window and the full series disagree, and on flat windows it is worse than noise:
    TA-Lib returns ``upper == lower == mid == close − 7e-15`` for 20 equal closes, i.e. a spurious
    "close > upper" point in the rule signal, and a history-dependent ``bb_pct``.

    Here each window is centred on its own last value ``x_t`` (``mean = x_t + mean(x − x_t)``) and
    the deviation is summed in a second pass, so a flat window gives exactly ``mean = x_t`` and
    ``std = 0``, and the result depends only on the ``period`` values. It equals TA-Lib's numbers
    to ~1e-12 relative (tested). A window containing NaN gives NaN, like TA-Lib.

    ``tail``: only the last ``tail`` rows are computed (earlier rows NaN). Each row is a function
    of its own window, so those rows are bit-identical to the full computation (tested); the live
    bot needs a few hundred rows of a thousand-bar window.
    """
    n = len(x)
    mean = np.empty(n)  # ``np.empty`` + ``fill``: what ``np.full`` does, without its ~4 µs of Python
    mean.fill(np.nan)
    std = np.empty(n)
    std.fill(np.nan)
    if n < period:
        return mean, std
    first = period - 1 if tail is None else max(period - 1, n - tail)
    # In blocks of rows: the (rows × period) deviations and their squares are ~3 × period arrays
    # of the series' length at once (16 MiB for Bollinger on a year), the largest transient of a
    # symbol's preparation (issue 13, scale). Each row is reduced over its own contiguous window
    # in every block size, so the numbers do not depend on the block (tested).
    for lo in range(first, n, WINDOW_ROWS_PER_PASS):
        hi = min(n, lo + WINDOW_ROWS_PER_PASS)
        win = _windows(x[lo - period + 1 : hi], period)
        last = x[lo:hi]
        dev = win - last[:, None]
        shift = dev.sum(axis=1) / period
        mean[lo:hi] = last + shift
        if with_std:
            centred = dev - shift[:, None]
            std[lo:hi] = np.sqrt((centred * centred).sum(axis=1) / period)
    return mean, std


def stoch_rsi(rsi: np.ndarray, tail: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic RSI as the SPEC defines it: RSI(14) → stochastic over 14 → K = SMA3 → D = SMA3(K).

    ``talib.STOCHRSI`` does not match the SPEC: its ``fastk`` is the *unsmoothed* stochastic and its
    ``fastd`` is SMA3 of that, i.e. there is no K smoothing (checked against a pandas reference;
    the difference reaches tens of points). ``talib.STOCH(rsi, rsi, rsi)`` has the right numbers but
    masks K with D's longer lookback. So it is composed here: ``talib.MIN``/``talib.MAX`` over the
    RSI, then the two 3-bar SMAs with :func:`window_mean_std` rather than ``talib.SMA``, whose
    running-sum residue made ``K > D`` flip between the live window and the full series when
    ``K == D == 0`` (RSI pinned at its 14-bar low).

    A flat RSI window yields a raw stochastic of 0, the convention of both TA-Lib's STOCH and the
    pandas-ta implementation the design point used, instead of a 0/0 NaN. "Flat" means a range
    ≤ :data:`STOCH_FLAT_RANGE` RSI points: on flat prices Wilder's averages decay together and the
    RSI wobbles in its last bits, which would otherwise be stretched to a full-scale 0–100 value.
    Takes the RSI(14) series (computed once by :func:`compute_indicators`); ``tail`` as in
    :func:`window_mean_std` (K is computed on ``STOCH_D − 1`` more rows, so D's tail is exact).
    """
    talib = _talib()
    lo = talib.MIN(rsi, timeperiod=STOCH_WINDOW)
    hi = talib.MAX(rsi, timeperiod=STOCH_WINDOW)
    rng = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        wide = rng > STOCH_FLAT_RANGE
        raw = np.where(wide, 100.0 * (rsi - lo) / np.where(wide, rng, 1.0), 0.0)
    raw[np.isnan(rng)] = np.nan
    k_tail = None if tail is None else tail + STOCH_D - 1
    k, _ = window_mean_std(raw, STOCH_K, with_std=False, tail=k_tail)
    d, _ = window_mean_std(k, STOCH_D, with_std=False, tail=tail)
    return k, d


def compute_indicators(
    open: ArrayLike,
    high: ArrayLike,
    low: ArrayLike,
    close: ArrayLike,
    volume: ArrayLike,
    *,
    tail: int | None = None,
    last_rows: int | None = None,
) -> dict[str, np.ndarray]:
    """Every SPEC §3 indicator for a candle series (keys: :data:`INDICATOR_KEYS`).

    ``open`` is accepted for interface symmetry (OHLCV) although no indicator here uses it.
    ``tail`` (the live bot's last rows): the windowed means (Bollinger, volume MA, Stochastic RSI)
    only for the last ``tail`` rows, bit-identical there; the recursive TA-Lib indicators always
    run over the whole series, since their values depend on all of it.

    ``last_rows`` (≤ ``tail``; default ``tail``): the Bollinger bands and the Stochastic RSI only
    for the last ``last_rows`` rows. Why apart: the live bot reads those two at its last rows only
    (the rule signal: the last row and the one before; the features: the last row), while the
    volume MA also feeds a z-score over the whole suffix (``tail``). Computing them on the
    suffix was ~40 % of the indicators' CPU on a 1000-bar window, on every candle of every symbol,
    before the bot even knows whether there is a signal.
    """
    del open  # no SPEC §3 indicator reads the open; kept in the signature on purpose
    h, lo, c, v = _as_f64(high), _as_f64(low), _as_f64(close), _as_f64(volume)
    talib = _talib()
    macd, macd_signal, macd_hist = talib.MACD(
        c, fastperiod=MACD_FAST, slowperiod=MACD_SLOW, signalperiod=MACD_SIGNAL
    )
    short = tail if last_rows is None else last_rows
    bb_mid, bb_std = window_mean_std(c, BB_PERIOD, tail=short)  # = talib.BBANDS(c, 20, 2, 2, SMA)
    rsi = talib.RSI(c, timeperiod=RSI_PERIOD)
    stoch_k, stoch_d = stoch_rsi(rsi, short)  # the Stochastic RSI uses the same RSI(14)
    out = {
        "rsi": rsi,
        "macd": macd,
        "macd_signal": macd_signal,
        "macd_hist": macd_hist,
        "bb_upper": bb_mid + BB_DEV * bb_std,
        "bb_mid": bb_mid,
        "bb_lower": bb_mid - BB_DEV * bb_std,
        "ema9": talib.EMA(c, timeperiod=9),
        "ema21": talib.EMA(c, timeperiod=21),
        "ema50": talib.EMA(c, timeperiod=50),
        "atr": talib.ATR(h, lo, c, timeperiod=ATR_PERIOD),
        "stoch_k": stoch_k,
        "stoch_d": stoch_d,
        "adx": talib.ADX(h, lo, c, timeperiod=ADX_PERIOD),
        "vol_ma20": window_mean_std(v, VOL_MA_PERIOD, with_std=False, tail=tail)[0],
    }
    return {key: np.asarray(out[key], dtype=np.float64) for key in INDICATOR_KEYS}
