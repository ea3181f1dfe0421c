"""Element-wise transforms the SPEC §4 features are made of: returns, guarded ratios, forward
fill, missing-value marks, the EMA stack.

Why a module of its own: each is a pure function of its arrays, row by row or along one axis,
with no window and no anchor, the building blocks ``features`` composes; the rolling statistics
live in ``rolling``. ``features`` re-exports them and calls them through its own names, so a test
that replaces one there (``tests/ml/test_leakage.py``) replaces it in the feature code.
"""

from __future__ import annotations

import numpy as np


def pct_change_filled(close: np.ndarray, lag: int) -> np.ndarray:
    """``close_t / close_{t−lag} − 1`` with NaN (history too short, missing data) and zero bases → 0.
    Along the last axis: a stack of series (the live row's closes) in one pass, element-wise the
    same numbers as each series alone."""
    out = np.zeros_like(close)
    if close.shape[-1] > lag:
        base, cur = close[..., :-lag], close[..., lag:]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(base != 0.0, cur / np.where(base != 0.0, base, 1.0) - 1.0, 0.0)
        out[..., lag:] = np.where(np.isfinite(r), r, 0.0)
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
