"""Purged, embargoed walk-forward splits (SPEC §5, §13 row 23).

Why purging matters here: a sample's label looks ``lookahead`` bars (6 h) into the future. At the
design point the last training samples' labels were computed from the very bars the validation
samples start on, so validation scores were inflated by label leakage. Every split in this module
therefore keeps a training sample at bar ``i`` only when its whole label window ``[i+1,
i+lookahead]`` ends strictly before the first validation bar, with ``embargo`` further bars of
clearance on top:

    first validation bar  >  i + lookahead + embargo      for every kept training sample i

i.e. ``min(val bar) ≥ max(train label end) + embargo + 1``.

The early-stopping slice is carved from the *tail* of the purged training pool (it is the most
recent data, the closest stand-in for the validation period) and the samples the model is fit on
are purged against that slice in the same way, so neither early stopping nor reporting sees a
label computed from bars the model was fit on. Early stopping and reporting never share a slice
(SPEC §13 "early stopping uses the reporting set").

The expanding window follows SPEC §5: ``s = ⌊train_ratio·n⌋``, ``step = max(1,
⌊(1 − train_ratio)·n/k⌋)``; fold f validates on samples ``[s + f·step, s + (f+1)·step)`` and
trains on what precedes them (purged); it stops when the window passes ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from perpbot.ml.labels import LOOKAHEAD

EMBARGO = 24


@dataclass(frozen=True)
class Fold:
    """Sample positions (into the dataset arrays) of one walk-forward fold.

    ``train_idx``: what the model is fit on (before balancing); ``es_idx``: the early-stopping
    slice; ``val_idx``: the out-of-sample slice that is scored. All sorted, pairwise disjoint,
    and in this time order: train < es < val, each gap purged and embargoed.
    """

    index: int
    train_idx: np.ndarray
    es_idx: np.ndarray
    val_idx: np.ndarray


def _bars(bar_index_or_dataset: Any) -> np.ndarray:
    """Accept a bar-index array or anything with a ``bar_index`` attribute (a ``Dataset``)."""
    raw = getattr(bar_index_or_dataset, "bar_index", bar_index_or_dataset)
    bars = np.asarray(raw, dtype=np.int64)
    if bars.ndim != 1:
        raise ValueError("bar_index must be 1-D")
    if bars.size > 1 and np.any(np.diff(bars) < 0):
        raise ValueError("bar_index must be in time order (samples sorted by bar)")
    return bars


def purge_before(
    bars: np.ndarray, candidates: np.ndarray, first_bar: int, *, lookahead: int, embargo: int
) -> np.ndarray:
    """Keep the candidate samples whose label window plus embargo ends before ``first_bar``."""
    keep = bars[candidates] + lookahead + embargo < first_bar
    return candidates[keep]


def split_es_tail(
    bars: np.ndarray,
    pool: np.ndarray,
    *,
    es_fraction: float,
    lookahead: int,
    embargo: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a time-ordered pool into (fit part, early-stopping tail), purged against each other.

    The tail is the last ``round(es_fraction·len(pool))`` samples (at least one when the fraction
    is positive and the pool is not empty). An empty fit part is possible on tiny pools; callers
    decide what to do with it.
    """
    if not 0.0 <= es_fraction < 1.0:
        raise ValueError(f"es_fraction must be in [0, 1), got {es_fraction}")
    if pool.size == 0 or es_fraction == 0.0:
        return pool, pool[:0]
    n_es = max(1, round(es_fraction * pool.size))
    es = pool[-n_es:]
    fit = purge_before(bars, pool[:-n_es], int(bars[es[0]]), lookahead=lookahead, embargo=embargo)
    return fit, es


def purged_walk_forward(
    bar_index: Any,
    n_folds: int = 5,
    train_ratio: float = 0.6,
    lookahead: int = LOOKAHEAD,
    embargo: int = EMBARGO,
    es_fraction: float = 0.15,
) -> list[Fold]:
    """Expanding-window folds over time-ordered samples, purged and embargoed (module docstring).

    ``bar_index``: the samples' bar positions in the market frame (or a ``Dataset``). Folds whose
    fit part ends up empty after purging are omitted (they could not train anything), so fewer
    than ``n_folds`` folds may come back on small datasets; ``Fold.index`` keeps the SPEC's fold
    number.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
    if lookahead < 0 or embargo < 0:
        raise ValueError("lookahead and embargo must be >= 0")
    bars = _bars(bar_index)
    n = bars.size
    s = int(np.floor(train_ratio * n))
    step = max(1, int(np.floor((1.0 - train_ratio) * n / n_folds)))
    all_idx = np.arange(n, dtype=np.int64)
    folds: list[Fold] = []
    for f in range(n_folds):
        start = s + f * step
        if start >= n or start <= 0:
            break
        val = all_idx[start : min(start + step, n)]
        pool = purge_before(bars, all_idx[:start], int(bars[val[0]]), lookahead=lookahead, embargo=embargo)
        fit, es = split_es_tail(bars, pool, es_fraction=es_fraction, lookahead=lookahead, embargo=embargo)
        if fit.size == 0:
            continue
        folds.append(Fold(index=f, train_idx=fit, es_idx=es, val_idx=val))
    return folds


def holdout_tail(
    bar_index: Any,
    fraction: float = 0.15,
    lookahead: int = LOOKAHEAD,
    embargo: int = EMBARGO,
) -> tuple[np.ndarray, np.ndarray]:
    """(fit part, tail) over all samples for the final model: the tail (last ``fraction`` of the
    samples) drives early stopping and the operating-threshold choice; the fit part is purged
    and embargoed against it so that neither decision is made on leaked labels."""
    bars = _bars(bar_index)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    return split_es_tail(
        bars, np.arange(bars.size, dtype=np.int64), es_fraction=fraction, lookahead=lookahead, embargo=embargo
    )
