"""One walk-forward fold of the training report, scored next to the no-ML baseline.

Why a module of its own: it is the one step of training (SPEC §5, §13 rows 23-24) that fits a
model and scores it on data it never saw; ``training`` orchestrates the folds, the final model and
the files, and the leakage tests call this step directly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import numpy as np

from perpbot.ml.backends import SEED, es_rows, fit_backend
from perpbot.ml.dataset import Dataset, stratified_undersample
from perpbot.ml.evaluation import (
    THRESHOLD_FALLBACK,
    operating_threshold,
    positive_proba,
    precision_recall_at,
    safe_auc,
)
from perpbot.ml.lgbm_params import ResolvedParams
from perpbot.ml.splits import Fold
from perpbot.ml.train_report import FoldMetrics


def utc_z(ms: int) -> str:
    """Epoch ms as ``YYYY-MM-DDTHH:MM:SSZ`` (the training report's and metadata's timestamps)."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate_fold(
    backend: str,
    ds: Dataset,
    fold: Fold,
    *,
    lgbm: ResolvedParams | None,
    config_threshold: float,
    nn_options: Mapping[str, Any] | None = None,
    seed: int = SEED,
) -> FoldMetrics:
    """Fit on the fold's balanced training part, stop early and pick the threshold on its ES
    slice, score the validation signal rows next to the no-ML baseline."""
    tr = fold.train_idx
    fit_idx = tr[stratified_undersample(ds.y[tr], ds.source[tr], seed=seed)]
    es = es_rows(ds, fold.es_idx)
    model = fit_backend(backend, ds, fit_idx, es, lgbm=lgbm, nn_options=nn_options, seed=seed)

    es_sig = fold.es_idx[ds.is_signal[fold.es_idx]]
    thr, fallback = (
        operating_threshold(ds.y[es_sig], positive_proba(model, ds.X[es_sig]))
        if es_sig.size
        else (THRESHOLD_FALLBACK, True)
    )

    val = fold.val_idx[ds.is_signal[fold.val_idx]]
    y_val = ds.y[val]
    p_val = positive_proba(model, ds.X[val]) if val.size else np.zeros(0)
    prec, rec, n_acc = precision_recall_at(y_val, p_val, thr)
    prec_c, rec_c, _ = precision_recall_at(y_val, p_val, config_threshold)
    from perpbot.ml.features import SIGNAL_STRENGTH_INDEX

    return FoldMetrics(
        fold=fold.index,
        val_start=utc_z(int(ds.time_ms[fold.val_idx[0]])),
        val_end=utc_z(int(ds.time_ms[fold.val_idx[-1]])),
        n_fit=int(fit_idx.size),
        n_es=int(es.size),
        n_val_signals=int(val.size),
        n_val_positives=int(y_val.sum()),
        auc=safe_auc(y_val, p_val),
        threshold=float(thr),
        threshold_fallback=fallback,
        precision=prec,
        recall=rec,
        n_accepted=n_acc,
        precision_at_config=prec_c,
        recall_at_config=rec_c,
        baseline_auc=safe_auc(y_val, ds.X[val, SIGNAL_STRENGTH_INDEX]),
        baseline_precision=float(y_val.mean()) if val.size else 0.0,
    )
