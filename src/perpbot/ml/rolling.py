"""Rolling statistics of the feature code (SPEC §4 z-scores, the OI moving average).

Why a module of their own: they carry the train/serve parity property the live bot relies on
(results depend on a bounded, absolutely anchored history), and the live path computes the last
row from the shortest input suffix that gives *bit-identical* numbers (:func:`exact_suffix_start`).
"""

from __future__ import annotations

import numpy as np

Z_STD_FLOOR = 1e-8
ZSCORE_ROWS_PER_PASS = 1  # rows of one rolling_zscore pass: bounds its temporaries (issue 13, memory)


def exact_suffix_start(n: int, anchor: int, window: int) -> int:
    """First index of the shortest suffix of an ``n``-long series (first row at absolute bar
    ``anchor``) on which :func:`rolling_zscore` gives the last row bit for bit.

    Why it is exact: the last row's statistics read its own block and the block before it only,
    each block's prefix sums are computed from that block's values alone, and blocks are anchored
    to absolute bar numbers. A suffix starting at the previous block's first bar therefore holds
    the same two blocks, summed in the same order. Every row of the last block is exact too.
    """
    if n == 0:
        return 0
    last_block = (anchor + n - 1) // window
    return max(0, (last_block - 1) * window - anchor)


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
        # same numbers with a fraction of the temporaries (~10 arrays of k × n floats). The live
        # row does not come here: it takes its last column only (``rolling_zscore_last``).
        step = ZSCORE_ROWS_PER_PASS
        out = np.empty_like(data)
        for i in range(0, k, step):
            out[i : i + step] = rolling_zscore(data[i : i + step], window, anchor)
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
    z = _normalised(data, cnt, s1, s2)
    return z[0] if squeeze else z


def _normalised(x: np.ndarray, cnt: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """``(x − mean)/max(std, floor)`` from the window's (count, sum, sum of squares): one code
    for the full computation and its last column, so that both round alike."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / cnt
        var = s2 / cnt
        var -= mean * mean
        np.maximum(var, 0.0, out=var)
        std = np.sqrt(var, out=var)
        return (x - mean) / np.maximum(std, Z_STD_FLOOR, out=std)


def rolling_zscore_last(x: np.ndarray, window: int, anchor: int = 0) -> np.ndarray:
    """``rolling_zscore(x, window, anchor)[..., -1]``, bit for bit: the live bot's one row.

    Why apart: the live row needs the last column only, and :func:`rolling_zscore` lays out,
    accumulates and normalises every column of the suffix (~0.5 ms of the ~1 ms the candle's
    z-scores cost, on every candle of every symbol, on the decision path). Here only the two
    blocks the last column reads are accumulated, with the same operations in the same order:
    the same sequential prefix sums (a block's leading padding is zeros, and adding zeros
    first changes no bit), the same ``current + (previous total − previous prefix)``, the same
    normalisation, on one column. Tested equal to :func:`rolling_zscore` on random inputs with
    NaNs, anchors and lengths."""
    arr = np.asarray(x, dtype=np.float64)
    data = arr[None, :] if arr.ndim == 1 else arr
    k, n = data.shape
    if n == 0:  # no last column: NaN (``rolling_zscore`` has no column to take)
        return np.full(k, np.nan) if arr.ndim > 1 else np.float64(np.nan)
    pad = int(anchor) % window
    block, offset = divmod(pad + n - 1, window)
    lo = block * window - pad  # data index of the last block's first bar (< 0: padding first)
    cnt, s1, s2 = _prefix_sums(data[:, max(lo, 0) :])[:, :, -1]
    if block > 0:
        plo = lo - window  # the previous block's first bar
        prev = _prefix_sums(data[:, max(plo, 0) : lo])
        at = plo + offset - max(plo, 0)  # the previous block's prefix at the same offset
        before = prev[:, :, at] if at >= 0 else np.zeros((3, k))
        tail = prev[:, :, -1] - before
        cnt, s1, s2 = cnt + tail[0], s1 + tail[1], s2 + tail[2]
    z = _normalised(data[:, -1], cnt, s1, s2)
    return z if arr.ndim > 1 else z[0]


def _prefix_sums(seg: np.ndarray) -> np.ndarray:
    """(count, sum, sum of squares) of each row of ``seg`` (NaN skipped), accumulated along the
    row: shape (3, rows, len), as :func:`rolling_zscore` accumulates a block."""
    valid = ~np.isnan(seg)
    acc = np.empty((3, *seg.shape))
    acc[0] = valid
    np.copyto(acc[1], np.where(valid, seg, 0.0))
    np.multiply(acc[1], acc[1], out=acc[2])
    np.cumsum(acc, axis=2, out=acc)
    return acc


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
