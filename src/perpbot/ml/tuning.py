"""LightGBM hyper-parameter search with Optuna (SPEC §7.4) and an explicit promotion rule.

Study
-----
Persisted in SQLite (``models/<sym>/optuna.sqlite3``) with ``load_if_exists=True``: an interrupted
run resumes, and ``trials`` is the *total* number of finished (complete or pruned) trials wanted,
so re-running the same command finishes the remainder instead of starting over. The study name is
per symbol plus a short fingerprint of everything the objective depends on (data file hash, folds,
train ratio, recall constraint, rule parameters, feature schema): trials scored on other data are
never mixed into a resumed study — new data simply opens a new study in the same file.

The objective a trial scores is :mod:`perpbot.ml.tuning_cv`; the rule that decides whether the
best trial's parameters become the active ones is :mod:`perpbot.ml.promotion`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perpbot.config import AppConfig
from perpbot.data.schema import data_path as default_data_path
from perpbot.data.schema import model_dir as symbol_model_dir
from perpbot.errors import ConfigError
from perpbot.fileio import atomic_write_text, jsonable
from perpbot.ml.backends import SEED
from perpbot.ml.dataset import build_dataset
from perpbot.ml.lgbm_params import (
    ACTIVE_PARAMS_FILE,
    ResolvedParams,
    default_resolved_params,
    resolve_lgbm_params,
)
from perpbot.ml.promotion import PROMOTION_RULE, promotion_decision
from perpbot.ml.splits import purged_walk_forward
from perpbot.ml.training import ES_FRACTION, NEGATIVE_RATIO, ProgressFn, ensure_writable
from perpbot.ml.tuning_cv import CVResult, cv_score, suggest_params
from perpbot.symbols import normalize_symbol

log = logging.getLogger(__name__)

STUDY_FILE = "optuna.sqlite3"
PREV_ACTIVE_FILE = "active_lgbm_params_prev.json"


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
