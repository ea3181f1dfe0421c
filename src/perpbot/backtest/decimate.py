"""Min/max decimation of chart series: fewer points, the same picture.

Why: a year of 15-minute equity is ~35k points per curve, far more than a chart has pixels, and
drawing (PNG) or embedding (HTML JSON) every point dominated the report's time. A regular stride
would be cheap but would drop peaks and troughs, so a drawdown could look shallower than it was.
Here the x range is cut into buckets (about one per horizontal pixel) and, in each bucket, the
first, the last, the lowest and the highest point of *every* curve are kept. A line drawn through
the kept points covers, in each pixel column, exactly the vertical span the full line covers, so
nothing visible changes, and every curve's global minimum and maximum are always present.

All curves of one chart share one index set (they share the x axis), so the union of each
curve's extremes is returned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perpbot.backtest.sorted_union import union_sorted

DEFAULT_BUCKETS = 2_000
"""About two buckets per horizontal pixel of a 12-inch, 100-dpi chart: safe on wider screens too."""


def minmax_index(series: Sequence[np.ndarray], buckets: int = DEFAULT_BUCKETS) -> np.ndarray:
    """Sorted indices to draw: per bucket of equal point count, each series' first, last, argmin
    and argmax (NaNs are ignored; a bucket of only NaNs keeps its ends).

    Every series must have the same length. With ``n <= 4 * buckets`` points every index is kept.
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in series]
    if not arrays:
        return np.zeros(0, dtype=np.int64)
    n = arrays[0].size
    if any(a.size != n for a in arrays):
        raise ValueError("minmax_index: series of different lengths")
    if buckets < 1:
        raise ValueError(f"minmax_index: buckets={buckets} must be >= 1")
    if n <= 4 * buckets:
        return np.arange(n, dtype=np.int64)
    size = -(-n // buckets)  # ceil: every bucket but the last holds ``size`` points
    full = n // size
    starts = np.arange(0, n, size, dtype=np.int64)
    keep = [starts, np.minimum(starts + size - 1, n - 1)]
    for a in arrays:
        body = a[: full * size].reshape(full, size)
        finite = np.isfinite(body)
        # NaN-safe arg extremes: NaNs are replaced by +inf / -inf so they never win.
        lo = np.where(finite, body, np.inf).argmin(axis=1)
        hi = np.where(finite, body, -np.inf).argmax(axis=1)
        base = starts[:full]
        keep.extend((base + lo, base + hi))
        if full * size < n:  # the short last bucket
            tail = a[full * size :]
            off = full * size
            if np.isfinite(tail).any():
                keep.append(np.asarray([off + np.nanargmin(tail), off + np.nanargmax(tail)], dtype=np.int64))
    return union_sorted(keep)
