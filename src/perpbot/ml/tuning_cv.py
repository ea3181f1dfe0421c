"""The tuning objective: a LightGBM parameter set's cross-validated score (and the search space).

Objective (SPEC §7.4, on purged and embargoed folds)
---------------------------------------------------
The dataset is built once (decay 0, k = 3) and shared by every trial. Per fold: stratified
undersampling of the training part, early stopping on the fold's separate early-stopping slice,
scoring on the validation fold's **signal rows** only. A fold with < 20 balanced rows or a
single-class validation slice scores AUC 0.5 / precision 0; a fold with ≥ 3 positives (and at
least one negative) gets the maximum precision subject to ``recall ≥ min_recall``.
``score = mean precision over those folds + 0.001 × mean AUC``; the running score is reported
after each fold so the median pruner (5 start-up trials, 3 warm-up steps) can stop hopeless
trials. TPE sampler, seed 42. Deviation, stated: degenerate folds (single-class validation) do not
enter the precision mean/std — a forced 0 would shift every trial equally but inflate the fold
standard deviation that the promotion rule looks at.

Note on optimism: the per-fold threshold is chosen on the validation fold itself (SPEC
objective), and the best of N trials is compared with a single baseline evaluation, so the best
score is biased upward. The promotion rule below is deliberately strict for that reason.

Separate from ``tuning.py`` (the Optuna study, its persistence and the results file) because this
is what a trial *measures*; the leakage tests spy on exactly these fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perpbot.ml.backends import SEED, es_rows, fit_backend
from perpbot.ml.dataset import Dataset, stratified_undersample
from perpbot.ml.evaluation import max_precision_at_recall, positive_proba, safe_auc
from perpbot.ml.lgbm_params import ResolvedParams
from perpbot.ml.splits import Fold

MIN_FOLD_POSITIVES = 3
MIN_BALANCED_ROWS = 20


@dataclass
class CVResult:
    """Per-fold and aggregate figures of one parameter set (validation signal rows only)."""

    score: float
    auc: float
    precision: float
    recall: float
    precision_std: float
    precision_folds: int
    fold_auc: list[float] = field(default_factory=list)
    fold_precision: list[float] = field(default_factory=list)
    fold_recall: list[float] = field(default_factory=list)
    fold_positives: list[int] = field(default_factory=list)
    fold_counted: list[bool] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "auc": self.auc,
            "precision": self.precision,
            "recall": self.recall,
            "precision_std": self.precision_std,
            "precision_folds": self.precision_folds,
            "fold_auc": self.fold_auc,
            "fold_precision": self.fold_precision,
            "fold_recall": self.fold_recall,
            "fold_positives": self.fold_positives,
            "fold_counted": self.fold_counted,
        }


def _aggregate(
    auc: list[float], prec: list[float], rec: list[float], counted: list[bool], positives: list[int]
) -> CVResult:
    p = [x for x, c in zip(prec, counted, strict=True) if c]
    r = [x for x, c in zip(rec, counted, strict=True) if c]
    mean_p = float(np.mean(p)) if p else 0.0
    mean_auc = float(np.mean(auc)) if auc else 0.5
    return CVResult(
        score=mean_p + 0.001 * mean_auc,
        auc=mean_auc,
        precision=mean_p,
        recall=float(np.mean(r)) if r else 0.0,
        precision_std=float(np.std(p)) if p else float("nan"),
        precision_folds=len(p),
        fold_auc=list(auc),
        fold_precision=list(prec),
        fold_recall=list(rec),
        fold_positives=list(positives),
        fold_counted=list(counted),
    )


def cv_score(
    ds: Dataset,
    folds: list[Fold],
    params: ResolvedParams,
    *,
    min_recall: float,
    seed: int = SEED,
    trial: Any | None = None,
) -> CVResult:
    """SPEC §7.4 objective on purged folds; reports the running score to ``trial`` for pruning."""
    import optuna

    auc: list[float] = []
    prec: list[float] = []
    rec: list[float] = []
    counted: list[bool] = []
    positives: list[int] = []
    for step, fold in enumerate(folds):
        tr = fold.train_idx
        fit_idx = tr[stratified_undersample(ds.y[tr], ds.source[tr], seed=seed)]
        val = fold.val_idx[ds.is_signal[fold.val_idx]]
        y_val = ds.y[val]
        n_pos = int(y_val.sum())
        positives.append(n_pos)
        usable = (
            fit_idx.size >= MIN_BALANCED_ROWS
            and np.unique(y_val).size == 2
            and np.unique(ds.y[fit_idx]).size == 2
        )
        if not usable:
            auc.append(0.5)
            prec.append(0.0)
            rec.append(0.0)
            counted.append(False)
        else:
            model = fit_backend("lgbm", ds, fit_idx, es_rows(ds, fold.es_idx), lgbm=params, seed=seed)
            p_val = positive_proba(model, ds.X[val])
            auc.append(safe_auc(y_val, p_val))
            _, fp, fr = max_precision_at_recall(y_val, p_val, min_recall)
            prec.append(fp)
            rec.append(fr)
            counted.append(n_pos >= MIN_FOLD_POSITIVES)
        if trial is not None:
            running = _aggregate(auc, prec, rec, counted, positives).score
            trial.report(running, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {step + 1}: running score {running:.4f}")
    return _aggregate(auc, prec, rec, counted, positives)


def suggest_params(trial: Any, n_estimators_range: tuple[int, int] = (100, 600)) -> dict[str, Any]:
    """SPEC §7.4 search space (``num_leaves`` bounded by ``2^max_depth − 1``)."""
    max_depth = trial.suggest_int("max_depth", 2, 7)
    leaves_hi = max(7, min(31, 2**max_depth - 1))
    return {
        "n_estimators": trial.suggest_int("n_estimators", *n_estimators_range),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "max_depth": max_depth,
        "num_leaves": trial.suggest_int("num_leaves", 7, leaves_hi),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 50),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-4, 1.0, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-4, 1.0, log=True),
        "weight_scale": trial.suggest_float("weight_scale", 0.5, 2.0),
    }
