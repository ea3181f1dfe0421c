"""Ctrl-C and SIGTERM in a worker: an interrupt where it is safe, deferred where it is not.

Why: a signal handler that raises ``KeyboardInterrupt`` raises it wherever the worker happens to
be. Inside the objective (the backtests of a trial) that is what we want: Optuna fails the trial
and the worker queues its retry (``worker.work``). Inside Optuna's own bookkeeping (creating a
trial, recording its outcome) it is not: an interrupt raised while Optuna records a finished
trial left its ``_run_trial`` with an ``UnboundLocalError`` instead (seen in CI, optuna 5.0.0), so
the command ended with a traceback and exit 1, not "error: interrupted" and 130. There the
interrupt is held and raised as soon as Optuna is done: the trial's outcome is recorded, and a
trial that had finished its work keeps its result.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """The worker's handler of ``SIGNALS`` (``installed``) and the sections where they wait."""

    def __init__(self) -> None:
        self.holding = False
        self.pending = False

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        if self.holding:
            self.pending = True
            return
        raise KeyboardInterrupt

    def _deliver(self) -> None:
        """Raise the interrupt that waited, once."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        old = {s: signal.signal(s, self) for s in SIGNALS}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Optuna's code: a signal waits until the section ends, then interrupts."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        self._deliver()

    @contextmanager
    def allowed(self) -> Iterator[None]:
        """Our objective inside a held section: a signal interrupts at once (one that came
        while held interrupts on entry)."""
        was = self.holding
        self.holding = False
        try:
            self._deliver()
            yield
        finally:
            self.holding = was
