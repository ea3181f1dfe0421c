"""Filter evaluation on signal rows (SPEC §5, §6.1): AUC, precision/recall at a threshold, the
operating threshold. Shared by training, tuning and the gate, so every report scores a model the
same way."""

from __future__ import annotations

from typing import Any

import numpy as np

THRESHOLD_MIN_RECALL = 0.15
THRESHOLD_FALLBACK = 0.50


def positive_proba(model: Any, X: np.ndarray) -> np.ndarray:
    """The model's probability of the positive class, whatever shape its ``predict_proba`` returns."""
    p = np.asarray(model.predict_proba(X), dtype=np.float64)
    return p[:, -1] if p.ndim == 2 else p


def safe_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, or 0.5 when the slice has a single class (SPEC §5) or is empty."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if y.size == 0 or np.unique(y).size < 2:
        return 0.5
    return float(roc_auc_score(y, score))


def precision_recall_at(y: np.ndarray, proba: np.ndarray, threshold: float) -> tuple[float, float, int]:
    """(precision, recall, accepted count) when accepting ``proba ≥ threshold``; precision is 0
    when nothing is accepted (an unusable filter earns no credit), recall 0 without positives."""
    y = np.asarray(y)
    accepted = np.asarray(proba) >= threshold
    n_acc = int(accepted.sum())
    tp = int((accepted & (y == 1)).sum())
    n_pos = int((y == 1).sum())
    return (tp / n_acc if n_acc else 0.0), (tp / n_pos if n_pos else 0.0), n_acc


def max_precision_at_recall(
    y: np.ndarray, proba: np.ndarray, min_recall: float
) -> tuple[float | None, float, float]:
    """(threshold, precision, recall) maximising precision subject to ``recall ≥ min_recall``.

    Uses the precision–recall curve with its terminal point (recall 0, precision 1 by convention)
    dropped, as SPEC §6.1 prescribes. Among equal precisions the lowest threshold (highest recall)
    wins. ``(None, 0, 0)`` when the slice is single-class or no point qualifies.
    """
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y)
    if y.size == 0 or np.unique(y).size < 2:
        return None, 0.0, 0.0
    prec, rec, thr = precision_recall_curve(y, proba)
    prec, rec = prec[:-1], rec[:-1]
    ok = np.flatnonzero(rec >= min_recall)
    if ok.size == 0:
        return None, 0.0, 0.0
    best = ok[np.argmax(prec[ok])]
    return float(thr[best]), float(prec[best]), float(rec[best])


def operating_threshold(y: np.ndarray, proba: np.ndarray) -> tuple[float, bool]:
    """SPEC §6.1 operating threshold: max precision s.t. recall ≥ 0.15; (0.50, True) as fallback."""
    thr, _, _ = max_precision_at_recall(y, proba, THRESHOLD_MIN_RECALL)
    return (THRESHOLD_FALLBACK, True) if thr is None else (thr, False)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std (ddof 0: the folds are the whole population we report on)."""
    if not values:
        return float("nan"), float("nan")
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())
