"""LightGBM hyper-parameter search with Optuna (SPEC §7.4) and an explicit promotion rule.

Study
-----
Persisted in SQLite (``models/<sym>/optuna.sqlite3``) with ``load_if_exists=True``: an interrupted
run resumes, and ``trials`` is the *total* number of finished (complete or pruned) trials wanted,
so re-running the same command finishes the remainder instead of starting over. The study name is
per symbol plus a short fingerprint of everything the objective depends on (data file hash, folds,
train ratio, recall constraint, rule parameters, feature schema): trials scored on other data are
never mixed into a resumed study — new data simply opens a new study in the same file.

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

Promotion rule (SPEC §13: tuning must not auto-promote on any improvement)
--------------------------------------------------------------------------
The best parameters are copied to ``active_lgbm_params.json`` only when **all** hold:

1. a baseline was computed (``--no-baseline`` never promotes): the same CV with the currently
   active parameters (or the built-in defaults);
2. ``best score > baseline score + 0.01``;
3. the standard deviation of the best trial's per-fold precision ≤ 0.05;
4. at least 3 folds had ≥ 3 positives (otherwise precision is measured on too few trades).

Otherwise the active parameters stay and the report says which condition failed. The previous
active file is kept as ``active_lgbm_params_prev.json``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perpbot.config import AppConfig
from perpbot.data.schema import data_path as default_data_path
from perpbot.data.schema import model_dir as symbol_model_dir
from perpbot.errors import ConfigError
from perpbot.fileio import atomic_write_text, jsonable
from perpbot.ml.backends import SEED, es_rows, fit_backend
from perpbot.ml.dataset import Dataset, build_dataset, stratified_undersample
from perpbot.ml.evaluation import max_precision_at_recall, positive_proba, safe_auc
from perpbot.ml.lgbm_params import (
    ACTIVE_PARAMS_FILE,
    ResolvedParams,
    default_resolved_params,
    resolve_lgbm_params,
)
from perpbot.ml.splits import Fold, purged_walk_forward
from perpbot.ml.training import ES_FRACTION, NEGATIVE_RATIO, ProgressFn, ensure_writable
from perpbot.symbols import normalize_symbol

log = logging.getLogger(__name__)

PROMOTION_MARGIN = 0.01
MAX_FOLD_PRECISION_STD = 0.05
MIN_PRECISION_FOLDS = 3
MIN_FOLD_POSITIVES = 3
MIN_BALANCED_ROWS = 20
STUDY_FILE = "optuna.sqlite3"
PREV_ACTIVE_FILE = "active_lgbm_params_prev.json"
PROMOTION_RULE = (
    f"promote only if a baseline was computed, best score > baseline + {PROMOTION_MARGIN}, "
    f"std of the best trial's per-fold precision <= {MAX_FOLD_PRECISION_STD}, and >= {MIN_PRECISION_FOLDS} "
    f"folds had >= {MIN_FOLD_POSITIVES} positives"
)


# --------------------------------------------------------------------------------------------
# Cross-validated score


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


# --------------------------------------------------------------------------------------------
# Promotion


def promotion_decision(best: CVResult | None, baseline: CVResult | None) -> tuple[bool, list[str]]:
    """Apply the module's promotion rule; returns (promote?, reasons — why not, or why yes)."""
    if best is None:
        return False, ["no completed trial"]
    if baseline is None:
        return False, ["no baseline computed (--no-baseline never promotes)"]
    reasons: list[str] = []
    if not best.score > baseline.score + PROMOTION_MARGIN:
        reasons.append(
            f"best score {best.score:.4f} does not beat baseline {baseline.score:.4f} "
            f"by more than {PROMOTION_MARGIN}"
        )
    if not (np.isfinite(best.precision_std) and best.precision_std <= MAX_FOLD_PRECISION_STD):
        reasons.append(f"per-fold precision std {best.precision_std:.4f} > {MAX_FOLD_PRECISION_STD}")
    if best.precision_folds < MIN_PRECISION_FOLDS:
        reasons.append(
            f"only {best.precision_folds} fold(s) had >= {MIN_FOLD_POSITIVES} positives "
            f"(need {MIN_PRECISION_FOLDS})"
        )
    if reasons:
        return False, reasons
    return True, [
        f"best score {best.score:.4f} > baseline {baseline.score:.4f} + {PROMOTION_MARGIN}, "
        f"fold precision std {best.precision_std:.4f}, {best.precision_folds} folds counted"
    ]


def _atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------------------------
# Orchestration


@dataclass
class TuneReport:
    """What a tuning run found and decided."""

    symbol: str
    results_path: Path
    promoted: bool
    reasons: list[str]
    best: CVResult | None
    baseline: CVResult | None
    best_params: dict[str, Any]
    trials_total: int
    trials_new: int
    study_name: str
    storage: str
    results: dict[str, Any]


def _fingerprint(parts: Mapping[str, Any]) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _cv_from_attrs(attrs: Mapping[str, Any]) -> CVResult | None:
    cv = attrs.get("cv")
    if not isinstance(cv, Mapping):
        return None
    return CVResult(**{k: cv[k] for k in CVResult.__dataclass_fields__ if k in cv})


def tune_symbol(
    symbol: str,
    *,
    data_dir: Path,
    model_dir: Path,
    config: AppConfig,
    trials: int = 50,
    folds: int = 5,
    min_recall: float = 0.35,
    baseline: bool = True,
    storage_dir: Path | None = None,
    progress: ProgressFn | None = None,
    train_ratio: float = 0.6,
    data_file: Path | None = None,
    n_estimators_range: tuple[int, int] = (100, 600),
    seed: int = SEED,
) -> TuneReport:
    """Run (or resume) the symbol's study, compare with the baseline, apply the promotion rule,
    write ``tune_results_<YYYYMMDD_HHMMSS>.json`` under ``<model_dir>/<sym>/``.

    ``n_estimators_range`` narrows the SPEC's 100–600 range (tests use tiny models).
    """
    import optuna

    from perpbot.data.store import data_file_sha256, load_market
    from perpbot.ml.features import build_feature_frame, feature_schema_hash

    t0 = time.perf_counter()
    symbol = normalize_symbol(symbol, source="--symbol")
    if trials < 0:
        raise ConfigError(f"--trials={trials}: must be >= 0")
    if folds < 1:
        raise ConfigError(f"--folds={folds}: must be >= 1")
    if not 0.0 < min_recall <= 1.0:
        raise ConfigError(f"--min-recall={min_recall}: must be in (0, 1]")
    if not 0.0 < train_ratio < 1.0:
        raise ConfigError(f"--train-ratio={train_ratio}: must be in (0, 1)")
    params = config.params_for(symbol)
    sym_dir = symbol_model_dir(Path(model_dir), symbol)
    path = Path(data_file) if data_file is not None else default_data_path(Path(data_dir), symbol)
    market = load_market(path)
    ensure_writable(sym_dir)
    store_dir = Path(storage_dir) if storage_dir is not None else sym_dir
    ensure_writable(store_dir)

    frame = build_feature_frame(market, params)
    ds = build_dataset(
        market, params, negative_ratio=NEGATIVE_RATIO, decay=0.0, seed=seed, frame=frame, symbol=symbol
    )
    cv_folds = purged_walk_forward(
        ds.bar_index, n_folds=folds, train_ratio=train_ratio, es_fraction=ES_FRACTION
    )
    sha = data_file_sha256(path)
    active = resolve_lgbm_params(sym_dir, None)

    baseline_cv: CVResult | None = None
    if baseline:
        baseline_cv = cv_score(ds, cv_folds, active, min_recall=min_recall, seed=seed)

    fp = _fingerprint(
        {
            "data_sha256": sha,
            "folds": folds,
            "train_ratio": train_ratio,
            "min_recall": min_recall,
            "signal_params": params.as_dict(),
            "schema": feature_schema_hash(),
            "k": NEGATIVE_RATIO,
            "n_estimators_range": list(n_estimators_range),
            "seed": seed,
        }
    )
    study_name = f"perpbot-lgbm-{symbol}-{fp}"
    storage = f"sqlite:///{(store_dir / STUDY_FILE).resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3),
    )
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done_before = len(study.get_trials(deepcopy=False, states=finished_states))
    n_new = max(0, trials - done_before)
    defaults = default_resolved_params()

    def objective(trial: optuna.Trial) -> float:
        suggested = suggest_params(trial, n_estimators_range)
        scale = float(suggested.pop("weight_scale"))
        rp = ResolvedParams({**defaults.params, **suggested}, scale, f"trial {trial.number}")
        cv = cv_score(ds, cv_folds, rp, min_recall=min_recall, seed=seed, trial=trial)
        trial.set_user_attr("cv", cv.as_dict())
        return cv.score

    def on_trial(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if progress is not None:
            done = len(study.get_trials(deepcopy=False, states=finished_states)) - done_before
            progress(f"{symbol} tuning", min(done, n_new), n_new)

    if progress is not None:
        progress(f"{symbol} tuning", 0, n_new)
    if n_new:
        study.optimize(objective, n_trials=n_new, callbacks=[on_trial])

    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    best_trial = max(completed, key=lambda t: (t.value, -t.number)) if completed else None
    best_cv = _cv_from_attrs(best_trial.user_attrs) if best_trial else None
    promote, reasons = promotion_decision(best_cv, baseline_cv)

    now = dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%d_%H%M%S")
    results_path = sym_dir / f"tune_results_{stamp}.json"
    k = 1
    while results_path.exists():  # two runs in the same second never overwrite each other
        results_path = sym_dir / f"tune_results_{stamp}_{k}.json"
        k += 1
    best_params = dict(best_trial.params) if best_trial else {}
    results: dict[str, Any] = {
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "symbol": symbol,
        "data_path": str(path),
        "data_sha256": sha,
        "recall_constraint": min_recall,
        "folds": folds,
        "folds_used": len(cv_folds),
        "train_ratio": train_ratio,
        "negative_ratio": NEGATIVE_RATIO,
        "decay": 0.0,
        "dataset": ds.counts(),
        "signal_params": params.as_dict(),
        "objective": "mean max-precision s.t. recall >= min_recall over folds with >= 3 positives "
        "+ 0.001 x mean AUC; purged/embargoed folds; validation signal rows only",
        "study": {"name": study_name, "storage": storage, "resumed_trials": done_before},
        "n_trials": {
            "requested_total": trials,
            "new": n_new,
            "complete": len(completed),
            "pruned": len(pruned),
        },
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "baseline": None
        if baseline_cv is None
        else {
            **baseline_cv.as_dict(),
            "params": {**active.params, "weight_scale": active.weight_scale},
            "params_source": active.source,
        },
        "best_trial": None
        if best_trial is None or best_cv is None
        else {
            "number": best_trial.number,
            **best_cv.as_dict(),
            "params": best_params,
        },
        "trials": [
            {"number": t.number, "score": t.value, "params": dict(t.params)}
            for t in sorted(completed, key=lambda t: t.number)
        ],
        "promotion": {
            "promoted": promote,
            "rule": PROMOTION_RULE,
            "reasons": reasons,
            "active_params_file": str(sym_dir / ACTIVE_PARAMS_FILE),
        },
    }
    _atomic_write_json(results_path, results)
    if promote:
        active_path = sym_dir / ACTIVE_PARAMS_FILE
        if active_path.is_file():
            _atomic_write_json(
                sym_dir / PREV_ACTIVE_FILE, json.loads(active_path.read_text(encoding="utf-8"))
            )
        _atomic_write_json(active_path, results)
        log.info("%s: promoted trial %s to %s", symbol, best_trial.number if best_trial else "?", active_path)
    return TuneReport(
        symbol=symbol,
        results_path=results_path,
        promoted=promote,
        reasons=reasons,
        best=best_cv,
        baseline=baseline_cv,
        best_params=best_params,
        trials_total=len(completed) + len(pruned),
        trials_new=n_new,
        study_name=study_name,
        storage=storage,
        results=results,
    )
