"""From a finished study to a verdict: overfitting statistics, defaults on the same windows, and
the walk-forward selection.

The verdict ("do the best parameters beat the defaults out of sample after the correction?") is
yes only when ALL hold, and the report lists every one that fails:

1. a best trial exists (at least one trial reached the minimum trade count);
2. its deflated Sharpe ratio is ≥ ``DSR_MIN`` (0.95): its out-of-sample Sharpe is unlikely to be
   the luck of the best of N;
3. the PBO is < ``PBO_MAX`` (0.5): the search's in-sample winner usually stays above the median
   out of sample;
4. its out-of-sample score beats the defaults' (the parameters configured now) on the same windows.

Walk-forward selection (reported next to it, never used for promotion): for each fold the trial
with the best *in-sample* score of that fold is chosen and its *out-of-sample* score of the same
fold recorded — the parameters are chosen on the in-sample window only, and the score comes
from the window that follows it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from perpbot.optimize import space
from perpbot.optimize.stats import DSRResult, PBOResult, deflated_sharpe, pbo_cscv
from perpbot.optimize.trial import Evaluator, TrialOutcome
from perpbot.optimize.worker import UNPLANNED

DSR_MIN = 0.95
PBO_MAX = 0.5


@dataclass(frozen=True, slots=True)
class TrialRow:
    number: int
    state: str  # complete | failed (too few trades) | error (killed/interrupted/raised)
    params: dict[str, Any]
    outcome: dict[str, Any] | None
    worker: str | None
    retry_of: int | None


def collect(study: optuna.Study) -> list[TrialRow]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.WAITING, TrialState.RUNNING) or t.user_attrs.get(UNPLANNED):
            continue
        outcome = t.user_attrs.get("outcome")
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "failed"}.get(t.state, "error")
        retry = t.system_attrs.get("failed_trial")
        params = space.from_signal_params(space.to_signal_params(t.params))  # 3.8000000000000003 → 3.8
        rows.append(TrialRow(t.number, state, params, outcome, t.user_attrs.get("worker"), retry))
    return rows


@dataclass(slots=True)
class Analysis:
    symbol: str
    metric: str
    rows: list[TrialRow]
    best: TrialRow | None
    defaults: TrialOutcome
    default_params: dict[str, Any]
    pbo: PBOResult
    dsr: DSRResult | None
    wfo: list[dict[str, Any]]
    passed: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def evaluated(self) -> list[TrialRow]:
        return [r for r in self.rows if r.outcome is not None and r.state != "error"]


def _param_key(r: TrialRow) -> str:
    return json.dumps(r.params, sort_keys=True)


def walk_forward_selection(rows: list[TrialRow], defaults: TrialOutcome) -> list[dict[str, Any]]:
    ok = sorted((r for r in rows if r.state == "complete" and r.outcome), key=_param_key)
    out = []
    for k in range(len(defaults.fold_oos)):
        if not ok:
            break
        pick = max(ok, key=lambda r: r.outcome["fold_is"][k])  # type: ignore[index]
        out.append(
            {
                "fold": k + 1,
                "chosen_trial": pick.number,
                "in_sample": pick.outcome["fold_is"][k],  # type: ignore[index]
                "out_of_sample": pick.outcome["fold_oos"][k],  # type: ignore[index]
                "defaults_out_of_sample": defaults.fold_oos[k],
            }
        )
    return out


def analyse(study: optuna.Study, evaluator: Evaluator) -> Analysis:
    rows = collect(study)
    default_sp = evaluator.app_config.params_for(evaluator.symbol)
    default_values = space.from_signal_params(default_sp)
    defaults = evaluator.evaluate(default_values, default_sp)
    # Canonical order (by parameters, not trial number): the statistics and the best trial then
    # do not depend on which worker finished first.
    evaluated = sorted((r for r in rows if r.outcome is not None and r.state != "error"), key=_param_key)
    complete = [r for r in evaluated if r.state == "complete"]
    best = max(complete, key=lambda r: r.outcome["oos_score"]) if complete else None  # type: ignore[index]
    if evaluated:
        mat = np.array([r.outcome["oos_daily"] for r in evaluated], dtype=np.float64).T  # type: ignore[index]
        pbo = pbo_cscv(mat)
    else:
        mat = np.zeros((0, 0))
        pbo = PBOResult(None, 0, 0, None, "no evaluated trial")
    dsr = None
    if best is not None:
        dsr = deflated_sharpe(np.asarray(best.outcome["oos_daily"], dtype=np.float64), mat)  # type: ignore[index]
    a = Analysis(
        evaluator.symbol,
        evaluator.metric,
        rows,
        best,
        defaults,
        default_values,
        pbo,
        dsr,
        walk_forward_selection(rows, defaults),
    )
    a.passed, a.reasons = verdict(a)
    return a


def verdict(a: Analysis) -> tuple[bool, list[str]]:
    """Apply the module's rule; returns (passed, reasons — each failed condition, or why yes)."""
    fails: list[str] = []
    if a.best is None:
        return False, ["no trial reached the minimum number of out-of-sample trades"]
    best_score = float(a.best.outcome["oos_score"])  # type: ignore[index]
    if a.dsr is None or a.dsr.dsr is None:
        fails.append("deflated Sharpe ratio undefined (flat or too short out-of-sample returns)")
    elif a.dsr.dsr < DSR_MIN:
        fails.append(f"deflated Sharpe ratio {a.dsr.dsr:.3f} < {DSR_MIN} given {a.dsr.trials} trials")
    if a.pbo.pbo is None:
        fails.append(f"PBO not computable ({a.pbo.reason})")
    elif a.pbo.pbo >= PBO_MAX:
        fails.append(f"probability of backtest overfitting {a.pbo.pbo:.2f} >= {PBO_MAX}")
    if not best_score > a.defaults.oos_score:
        fails.append(
            f"best out-of-sample {a.metric} {best_score:.4g} does not beat "
            f"the defaults' {a.defaults.oos_score:.4g}"
        )
    if fails:
        return False, fails
    return True, [
        f"DSR {a.dsr.dsr:.3f} >= {DSR_MIN}, PBO {a.pbo.pbo:.2f} < {PBO_MAX}, "  # type: ignore[union-attr]
        f"{a.metric} {best_score:.4g} > defaults {a.defaults.oos_score:.4g}"
    ]
