"""The worker never runs a trial outside the plan in ``qmc`` mode."""

from __future__ import annotations

from typing import Any

import optuna
import pytest

from perpbot.optimize import space
from perpbot.optimize.worker import UNPLANNED, UnplannedTrial, is_planned, make_objective


class NoRun:
    """An evaluator that must not be called."""

    def evaluate(self, *_: Any) -> Any:
        raise AssertionError("an unplanned trial ran a backtest")


def test_queued_and_retried_trials_are_planned_fresh_ones_are_not() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(space.qmc_plan(1, seed=3)[0])
    assert is_planned(study.ask())
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=space.qmc_plan(1, seed=4)[0],
            distributions=space.distributions(),
        )
    )
    assert is_planned(study.ask())
    assert not is_planned(study.ask())


def test_unplanned_trial_fails_before_any_work() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    objective = make_objective(NoRun(), "host:1", planned=True)  # type: ignore[arg-type]
    with pytest.raises(UnplannedTrial):
        study.optimize(objective, n_trials=1, catch=())
    (t,) = study.trials
    assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs == {UNPLANNED: True}
    assert t.params == {}
