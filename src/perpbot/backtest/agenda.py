"""Skip-ahead for the backtest loop (issue 13): the steps at which something can happen.

A step of the timeline needs the loop only when something can happen in it. The runner asks
three owners, each about what it alone knows:

- the data (this module): which steps hold a candle with a rule signal (only then does a bot act
  on a candle; a HOLD candle is a no-op for ``SymbolBot.on_candle``, since backtest filters never
  hot-reload) or a symbol's last candle (the end-of-data close);
- the matching engine (``MatchingEngine.quiet``): whether a symbol's book can be touched by a bar
  (a position: funding, liquidation; a resting trigger order; an open order);
- each bot (``SymbolBot.at_rest``): whether its ``reconcile()`` would be a no-op (flat, nothing in
  flight, no background work, no order of its own left to check or cancel).

While every book is quiet and every bot at rest, the steps up to the next signal or last candle
are skipped whole: nothing is processed, no clock is set, no reconcile runs. Why that is exactly
what stepping does there: see ``docs/ARCHITECTURE.md`` ("Skip-ahead"). The same ``SymbolBot`` and
``RiskManager`` run on every step that is not skipped; nothing here decides a trade.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from perpbot.backtest.sorted_union import union_sorted


class _Series(Protocol):
    open_time_ms: np.ndarray
    ready: np.ndarray
    side: list[Any]


@dataclass(frozen=True, slots=True)
class Agenda:
    """Per timeline step: whether the data wakes the loop there, and the candle counts."""

    wake_steps: np.ndarray  # sorted step indices with a signal candle or a symbol's last candle
    candles_before: np.ndarray  # candles_before[k] = candles in steps 0..k-1 (length steps + 1)
    # step → the symbol indices (ascending) whose candle there wakes the loop
    wake_symbols: dict[int, tuple[int, ...]]

    @property
    def n_steps(self) -> int:
        return int(self.candles_before.size - 1)

    def next_wake(self, k: int) -> int:
        """The first step ≥ ``k`` where the data wakes the loop (``n_steps`` when none)."""
        i = int(np.searchsorted(self.wake_steps, k, side="left"))
        return int(self.wake_steps[i]) if i < self.wake_steps.size else self.n_steps

    def candles(self, k: int, j: int) -> int:
        """Candles (all symbols) in steps ``k .. j-1``."""
        return int(self.candles_before[j] - self.candles_before[k])


def build_agenda(series: Sequence[_Series], timeline_open_ms: np.ndarray) -> Agenda:
    """The agenda of ``series`` on the timeline of open times (``runner.build_timeline``)."""
    n_steps = int(timeline_open_ms.size)
    per_step = np.zeros(n_steps, dtype=np.int64)
    wake: list[np.ndarray] = []
    by_step: dict[int, list[int]] = {}
    for si, s in enumerate(series):
        step_of = np.searchsorted(timeline_open_ms, s.open_time_ms)
        per_step[step_of] += 1
        if step_of.size == 0:
            continue
        has_signal = np.fromiter((x is not None for x in s.side), dtype=bool, count=len(s.side))
        rows = np.flatnonzero(has_signal & s.ready)
        mine = union_sorted([step_of[rows], step_of[-1:]])  # + the end-of-data close
        wake.append(mine)
        for k in mine.tolist():
            by_step.setdefault(k, []).append(si)
    steps = union_sorted(wake) if wake else np.zeros(0, dtype=np.int64)
    before = np.zeros(n_steps + 1, dtype=np.int64)
    np.cumsum(per_step, out=before[1:])
    return Agenda(
        wake_steps=steps.astype(np.int64),
        candles_before=before,
        wake_symbols={k: tuple(v) for k, v in by_step.items()},
    )
