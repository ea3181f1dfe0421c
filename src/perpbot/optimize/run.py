"""``perpbot optimize`` end to end: prepare (all checks), run the workers, then per symbol the
analysis, charts, ``optimize.json`` and — only when the verdict passes — promotion.

Resumable: running the same command again joins the same studies (fingerprint checked) and runs
only the trials still missing; a study that already holds ``--trials`` finished trials goes
straight to the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perpbot.config import AppConfig
from perpbot.optimize.analysis import Analysis, analyse
from perpbot.optimize.promotion import write_overrides
from perpbot.optimize.report import charts, importances, symbol_document, write_json
from perpbot.optimize.storage import mask_url
from perpbot.optimize.study import OptimizeSettings, prepare, run_workers, study_name

REPORT_NAME = "optimize.json"


@dataclass(slots=True)
class OptimizeRun:
    settings: OptimizeSettings
    analyses: dict[str, Analysis] = field(default_factory=dict)
    promoted: dict[str, dict[str, str]] = field(default_factory=dict)
    report: Path | None = None
    charts: list[Path] = field(default_factory=list)
    ran_here: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def run_optimize(
    settings: OptimizeSettings, app: AppConfig, *, worker_index: int = 0, echo: Callable[[str], None] = print
) -> OptimizeRun:
    t0 = time.perf_counter()
    jobs = prepare(settings, app, worker_index)
    run = OptimizeRun(settings)
    run.ran_here = run_workers(settings, jobs, worker_index)
    run.seconds = time.perf_counter() - t0
    if settings.worker_only:
        return run
    docs: dict[str, Any] = {}
    for job in jobs:
        a = analyse(job.study, job.evaluator)
        imp = importances(job.study, settings.seed)
        run.analyses[job.symbol] = a
        run.charts += charts(settings.out, a, job.evaluator, imp)
        doc = symbol_document(a, job.evaluator, imp)
        doc["study"] = study_name(settings, job.symbol)
        doc["fingerprint"] = job.fingerprint
        doc["ml_model_in_sample"] = job.evaluator.ml_in_sample()
        if doc["ml_model_in_sample"] is not None:
            win = doc["ml_model_in_sample"]
            echo(
                f"{job.symbol}: the ML model was trained on {win['train_start']} → {win['train_end']}, "
                "inside the out-of-sample windows: its filtering there is in-sample"
            )
        promo: dict[str, Any] = {"promoted": False, "file": None, "overrides": None}
        if a.passed and settings.promote_to is not None and a.best is not None:
            written = write_overrides(settings.promote_to, job.symbol, a.best.params)
            run.promoted[job.symbol] = written
            promo = {"promoted": True, "file": str(settings.promote_to), "overrides": written}
            echo(
                f"{job.symbol}: PROMOTED trial {a.best.number} → {settings.promote_to}: "
                + " ".join(f"{k}={v}" for k, v in written.items())
            )
        elif a.passed:
            echo(f"{job.symbol}: verdict passed, not promoted (--no-promote)")
        else:
            echo(f"{job.symbol}: NOT promoted — " + "; ".join(a.reasons))
        doc["promotion"] = promo
        docs[job.symbol] = doc
    document = {
        "kind": "perpbot optimize",
        "storage": mask_url(settings.storage_url()),
        "settings": {
            "trials": settings.trials,
            "folds": settings.folds,
            "metric": settings.metric,
            "min_trades": settings.min_trades,
            "sampler": settings.sampler,
            "seed": settings.seed,
            "ml": settings.use_ml,
            "workers_local": settings.workers,
        },
        "method": (
            "per trial one fresh backtest (real bots, risk manager, simulator) on each of K+1 equal "
            "blocks; fold k: in-sample = trades of blocks 0..k-1 closed before the fold start minus a "
            "24-bar embargo, out-of-sample = block k's trades; the objective is the "
            "metric over all out-of-sample windows; PBO by CSCV over the trials' daily out-of-sample "
            "returns; deflated Sharpe of the best trial given every evaluated trial"
        ),
        "symbols": docs,
    }
    run.report = write_json(settings.out / REPORT_NAME, document)
    return run
