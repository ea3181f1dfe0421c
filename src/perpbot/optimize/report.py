"""``optimize.json`` and the three charts per symbol (``<out>/<symbol>_*.png``).

Charts: the parameter importances (Optuna's fANOVA over the complete trials, seeded), every
trial's out-of-sample score against its in-sample score (failed trials grey, best and defaults
marked — points far below the diagonal are what overfitting looks like), and the best trial's
walk-forward equity (out-of-sample windows only, fold boundaries marked) next to the defaults'.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from perpbot.fileio import atomic_write_text, jsonable
from perpbot.optimize import space
from perpbot.optimize.analysis import DSR_MIN, PBO_MAX, Analysis
from perpbot.optimize.trial import Evaluator
from perpbot.optimize.windows import DAY_MS


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def importances(study: optuna.Study, seed: int) -> dict[str, float] | None:
    """fANOVA importances, or None with fewer than 2 complete trials or a constant objective."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2 or len({t.value for t in done}) < 2:
        return None
    ev = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    return {k: float(v) for k, v in optuna.importance.get_param_importances(study, evaluator=ev).items()}


def symbol_document(a: Analysis, ev: Evaluator, imp: dict[str, float] | None) -> dict[str, Any]:
    best = a.best
    counts = {s: sum(1 for r in a.rows if r.state == s) for s in ("complete", "failed", "error")}
    return {
        "symbol": a.symbol,
        "metric": a.metric,
        "windows": [
            {k.removesuffix("_ms"): (_iso(v) if k.endswith("_ms") else v) for k, v in w.items()}
            for w in ev.folds.as_dict()
        ],
        "trials": counts,
        "verdict": {
            "best_beats_defaults_out_of_sample": a.passed,
            "reasons": a.reasons,
            "rule": (
                f"best trial exists, DSR >= {DSR_MIN}, PBO < {PBO_MAX}, best OOS score > defaults' OOS score"
            ),
        },
        "best": None
        if best is None
        else {
            "trial": best.number,
            "params": best.params,
            "out_of_sample": best.outcome["oos_summary"],  # type: ignore[index]
            "oos_score": best.outcome["oos_score"],  # type: ignore[index]
            "is_score": best.outcome["is_score"],  # type: ignore[index]
            "fold_oos": best.outcome["fold_oos"],  # type: ignore[index]
            "fold_is": best.outcome["fold_is"],  # type: ignore[index]
        },
        "defaults": {
            "params": a.default_params,
            "out_of_sample": a.defaults.oos_summary,
            "oos_score": a.defaults.oos_score,
            "is_score": a.defaults.is_score,
            "fold_oos": a.defaults.fold_oos,
            "failed": a.defaults.failed,
        },
        "pbo": a.pbo.as_dict(),
        "deflated_sharpe": None if a.dsr is None else a.dsr.as_dict(),
        "walk_forward_selection": {
            "per_fold": a.wfo,
            "mean_out_of_sample": float(np.mean([w["out_of_sample"] for w in a.wfo])) if a.wfo else None,
            "defaults_mean_out_of_sample": float(np.mean(a.defaults.fold_oos)),
        },
        "param_importances": imp,
        "all_trials": [
            {
                "number": r.number,
                "state": r.state,
                "params": r.params,
                "oos_score": None if r.outcome is None else r.outcome["oos_score"],
                "is_score": None if r.outcome is None else r.outcome["is_score"],
                "oos_trades": None if r.outcome is None else r.outcome["oos_trades"],
                "failed": None if r.outcome is None else r.outcome["failed"],
                "worker": r.worker,
                "retry_of": r.retry_of,
            }
            for r in a.rows
        ],
    }


def write_json(path: Path, doc: dict[str, Any]) -> Path:
    return atomic_write_text(path, json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n")


def charts(out: Path, a: Analysis, ev: Evaluator, imp: dict[str, float] | None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    sym = a.symbol.lower()

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = [r.env_name for r in space.SPACE]
    vals = [0.0 if imp is None else imp.get(n, 0.0) for n in names]
    ax.barh(names, vals, color="#4c72b0")
    ax.set_xlabel(
        "importance (fANOVA)" if imp is not None else "importance: fewer than 2 distinct complete trials"
    )
    ax.set_title(f"{a.symbol}: parameter importances")
    fig.tight_layout()
    paths.append(_save(fig, out / f"{sym}_importances.png"))

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for state, color in (("failed", "#bbbbbb"), ("complete", "#4c72b0")):
        pts = [
            (r.outcome["is_score"], r.outcome["oos_score"]) for r in a.rows if r.state == state and r.outcome
        ]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.scatter(x, y, s=14, color=color, label=f"{state} ({len(pts)})")
    if a.best is not None:
        ax.scatter(
            [a.best.outcome["is_score"]],
            [a.best.outcome["oos_score"]],
            s=80,
            marker="*",
            color="#c44e52",
            label="best",
        )  # type: ignore[index]
    ax.scatter(
        [a.defaults.is_score], [a.defaults.oos_score], s=60, marker="D", color="#55a868", label="defaults"
    )
    lims = [v for v in (*ax.get_xlim(), *ax.get_ylim()) if math.isfinite(v)]
    ax.plot([min(lims), max(lims)], [min(lims), max(lims)], lw=0.8, color="k", ls=":")
    ax.set_xlabel(f"in-sample {a.metric} (mean over folds)")
    ax.set_ylabel(f"out-of-sample {a.metric}")
    ax.set_title(f"{a.symbol}: out-of-sample vs in-sample per trial")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, out / f"{sym}_oos_vs_is.png"))

    fig, ax = plt.subplots(figsize=(8, 3.5))
    start = ev.folds.oos_start
    base = ev.initial_balance
    for label, daily, color in (
        (
            "best" if a.best is None else f"best (trial {a.best.number})",
            None if a.best is None else a.best.outcome["oos_daily"],
            "#c44e52",
        ),  # type: ignore[index]
        ("defaults", list(a.defaults.oos_daily), "#55a868"),
    ):
        if daily is None:
            continue
        d = np.asarray(daily, dtype=np.float64)
        t = [datetime.fromtimestamp((start + (i + 1) * DAY_MS) / 1000, tz=UTC) for i in range(d.size)]
        ax.plot(t, base * (1 + np.cumsum(d)), color=color, lw=1.2, label=label)
    for k in range(2, ev.folds.k + 1):
        ax.axvline(
            datetime.fromtimestamp(ev.folds.bounds[k] / 1000, tz=UTC), color="#888888", lw=0.6, ls="--"
        )
    ax.set_ylabel("equity (USDT)")
    ax.set_title(f"{a.symbol}: walk-forward equity, out-of-sample windows only")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    paths.append(_save(fig, out / f"{sym}_best_equity.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    from perpbot.fileio import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
