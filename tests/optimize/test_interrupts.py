"""Ctrl-C / SIGTERM in a worker: at once inside a trial's work, after Optuna's bookkeeping."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.study import _optimize
from optuna.trial import TrialState

from perpbot.optimize.interrupts import Interrupts
from perpbot.optimize.worker import work


def test_a_signal_in_a_held_section_waits_for_its_end() -> None:
    irq = Interrupts()
    with irq.installed(), pytest.raises(KeyboardInterrupt):
        with irq.held():
            os.kill(os.getpid(), signal.SIGTERM)
            reached = True  # the handler only noted it
        raise AssertionError("not interrupted at the end of the held section")
    assert reached


def test_inside_a_held_section_the_objective_is_interrupted_at_once() -> None:
    irq = Interrupts()
    with irq.installed(), irq.held(), irq.allowed(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    irq2 = Interrupts()
    with irq2.held():  # delivered once: the held section's end does not raise it again
        irq2(signal.SIGTERM, None)  # arrived while Optuna was busy...
        with pytest.raises(KeyboardInterrupt), irq2.allowed():  # ...interrupts as the objective starts
            raise AssertionError("the objective started")


def test_the_handlers_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with Interrupts().installed():
        pass
    assert {s: signal.getsignal(s) for s in before} == before


class Scores:
    """An evaluator whose every trial succeeds at once."""

    def evaluate(self, *_: Any) -> Any:
        return SimpleNamespace(failed=None, oos_score=1.0, user_attrs=lambda: {})


def test_sigterm_while_optuna_records_a_trial_keeps_its_result_then_interrupts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen in CI: the interrupt raised inside Optuna's recording of a finished trial left
    ``_run_trial`` with an ``UnboundLocalError`` (a traceback and exit 1, not "interrupted")."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    tell = _optimize._tell_with_warning

    def tell_after_a_signal(**kw: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)
        return tell(**kw)

    monkeypatch.setattr(_optimize, "_tell_with_warning", tell_after_a_signal)
    study = optuna.create_study(direction="maximize")
    with pytest.raises(KeyboardInterrupt):
        work(study, Scores(), 3, "host:1", planned=False)  # type: ignore[arg-type]
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE and t.value == 1.0
