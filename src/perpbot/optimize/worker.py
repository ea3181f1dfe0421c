"""The trial loop of one worker process (local ``--workers`` child or another machine).

The loop asks the shared study for work until it holds ``trials`` finished trials (COMPLETE, or
PRUNED = failed on the minimum trade count). WAITING trials (the ``qmc`` plan, retries of killed
trials) are taken first — Optuna hands each to exactly one worker. When nothing is waiting and
the remaining trials are running elsewhere, the worker does not start extra ones: it waits,
calling ``fail_stale_trials`` so that a trial whose worker died is failed and queued again
(storage module docstring), and runs that retry if it is free first.

Interrupts: Ctrl-C / SIGTERM fail the running trial and queue a retry copy before leaving, so a
resumed study (same command again) re-runs exactly that trial. One that comes while Optuna
records a trial waits until it is recorded (``interrupts``).
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from perpbot.optimize.interrupts import Interrupts
from perpbot.optimize.space import suggest, to_signal_params
from perpbot.optimize.trial import Evaluator

POLL_S = 0.5
UNPLANNED = "unplanned"  # user attr of a trial that did no work (see ``UnplannedTrial``)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class UnplannedTrial(Exception):
    """Raised before any work for a trial that Optuna created instead of taking a queued one."""


def is_planned(trial: optuna.Trial) -> bool:
    """A queued plan point (``fixed_params``) or a retry copy (created with its parameters)."""
    frozen = trial._cached_frozen_trial  # Optuna has no public accessor for a live trial's attrs
    return bool(frozen.system_attrs.get("fixed_params") or frozen.params)


def make_objective(
    evaluator: Evaluator, tag: str, planned: bool, interrupts: Interrupts | None = None
) -> Callable[[optuna.Trial], float]:
    irq = Interrupts() if interrupts is None else interrupts  # a fresh one never holds: no-op

    def objective(trial: optuna.Trial) -> float:
        with irq.allowed():
            if planned and not is_planned(trial):
                # Another worker took the last queued trial between our check and Optuna's ask(),
                # which then created a new trial: it must not run (the plan would not be the plan).
                trial.set_user_attr(UNPLANNED, True)
                raise UnplannedTrial
            values = suggest(trial)
            trial.set_user_attr("worker", tag)
            outcome = evaluator.evaluate(values, to_signal_params(values))
            trial.set_user_attr("outcome", outcome.user_attrs())
            if outcome.failed:
                raise optuna.TrialPruned(outcome.failed)
            return outcome.oos_score

    return objective


def _requeue_interrupted(study: optuna.Study, tag: str) -> None:
    """Queue a retry (same parameters) of this worker's trial that the interrupt failed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    for t in trials:
        if (
            t.state == TrialState.FAIL
            and t.user_attrs.get("worker") == tag
            and not t.user_attrs.get(UNPLANNED)
            and t.number not in retried
        ):
            retry(study, t)


def work(study: optuna.Study, evaluator: Evaluator, trials: int, tag: str, *, planned: bool) -> int:
    """Run trials until the study holds ``trials`` finished ones; returns how many ran here.

    ``planned``: every trial comes from the enqueued plan (``qmc``); the sampler is never asked.
    """
    interrupts = Interrupts()
    objective = make_objective(evaluator, tag, planned, interrupts)
    # Optuna logs a failed trial with its traceback at WARNING; an interrupt is not a bug, and
    # real errors still propagate with theirs.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ran = 0
    with interrupts.installed():
        while True:
            counts = Counter(t.state for t in study.get_trials(deepcopy=False))
            finished = sum(counts[s] for s in FINISHED)
            if finished >= trials:
                return ran
            waiting, running = counts[TrialState.WAITING], counts[TrialState.RUNNING]
            if waiting == 0 and (planned or finished + running >= trials):
                if running == 0:
                    return ran  # plan exhausted (trials that raised an error are reported)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)
                time.sleep(POLL_S)
                continue
            try:
                with interrupts.held():  # Optuna's bookkeeping; ``objective`` allows them again
                    study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)
            except KeyboardInterrupt:
                _requeue_interrupted(study, tag)
                raise
            except UnplannedTrial:
                continue
            except ValueError as exc:
                # Our heartbeat was late enough (machine stalled) for another worker to fail this
                # trial as stale and queue its retry; the retry will run it, so carry on.
                if not str(exc).startswith("Cannot tell a "):
                    raise
                continue
            ran += 1
