"""The hostile layer's state: held events, deferred executions and income visibility.

``SimExchange`` owns the asyncio delivery queue; this object decides *when* each engine event
may enter it and *when* a deferred execution runs, both on the injected clock. It is plain,
synchronous bookkeeping so that the adapter stays a thin async shell:

* ``admit`` gives every event its fate (``faults.EventFate``) and appends it to the FIFO of its
  kind (one per Binance event type); ``release`` pops, across kinds, every head whose release
  time has come, oldest first. A late head holds back its kind's later events: the per-type
  ordering guarantee holds by construction.
* ``schedule`` / ``due_actions`` keep the deferred engine calls (fills of an acknowledged or
  partially filled order, an expiry) in (due time, scheduling order).
* ``note_incomes`` stamps each new income row with the clock time it becomes visible.
* ``scripted_market`` turns an ``OrderScript`` into engine calls now and deferred ones later.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from perpbot.domain.events import ExchangeEvent
from perpbot.domain.types import Income, OrderResult, OrderSide, OrderStatus
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.faults import (
    CallFault,
    Delivery,
    EventFate,
    FaultDice,
    FaultPlan,
    OrderScript,
    event_kind,
)

_KINDS = ("ORDER_TRADE_UPDATE", "ALGO_UPDATE", "ACCOUNT_UPDATE")


class NowMs(Protocol):
    """Anything with the clock's ``now_ms()`` (``perpbot.engine.clock.Clock`` fits)."""

    def now_ms(self) -> int: ...


@dataclass(order=True, slots=True)
class _Action:
    due_ms: int
    seq: int
    run: Callable[[], object] = field(compare=False)
    fate: EventFate | None = field(compare=False, default=None)


class HostileState:
    """Fault decisions and time-based holding for one ``SimExchange``."""

    def __init__(self, plan: FaultPlan, now: Callable[[], int]) -> None:
        self.plan = plan
        self.dice = FaultDice(plan)
        self.now = now
        self._held: dict[str, deque[tuple[int, int, ExchangeEvent]]] = {k: deque() for k in _KINDS}
        self._seq = 0
        self._actions: list[_Action] = []
        self._action_seq = 0
        self._ordinals: dict[str, int] = {}
        self._income_seen = 0
        self._income_visible: dict[int, int] = {}  # id(row) -> clock ms it becomes visible
        # How often each behaviour fired (dropped, late, during (calls), income_delayed, ack, split, expire,
        # timeout, lost, fail, read_fail, adl): lets a random-schedule test prove it was hostile.
        self.stats: Counter[str] = Counter()
        self.adl_checked: dict[str, int] = {}  # symbol -> last bar index the ADL dice saw
        self.dropped: list[ExchangeEvent] = []  # what a dead stream lost (diagnostics, tests)
        self.late: list[tuple[int, ExchangeEvent]] = []  # (release ms, event) held back when produced

    # ------------------------------------------------------------------ calls

    def count_fault(self, fault: CallFault | None) -> None:
        """Record a call fault that is about to act (``stats``)."""
        if fault is not None:
            for k, on in (("fail", bool(fault.fail_code)), ("lost", fault.lost), ("timeout", fault.timeout)):
                if on:
                    self.stats[k] += 1
                    return

    def ordinal(self, method: str) -> int:
        """0-based count of ``method`` calls so far (the key of ``FaultPlan.calls``)."""
        n = self._ordinals.get(method, 0)
        self._ordinals[method] = n + 1
        return n

    # ------------------------------------------------------------------ events

    def admit(self, events: list[ExchangeEvent], fate: EventFate | None = None) -> bool:
        """Queue ``events`` by kind with their fates; True when one of them asked for DURING."""
        now = self.now()
        during = False
        dead = any(start <= now < end for start, end in self.plan.dead_stream)
        for ev in events:
            f = fate if fate is not None else self.dice.event_fate(ev)
            if dead or f.delivery is Delivery.DROP:
                self.dropped.append(ev)
                self.stats["dropped"] += 1
                continue
            during = during or f.delivery is Delivery.DURING
            at = now + round(f.delay_s * 1000) if f.delivery is Delivery.LATE else now
            if f.delivery is Delivery.LATE:
                self.late.append((at, ev))
                self.stats["late"] += 1
            self._seq += 1
            self._held[event_kind(ev)].append((at, self._seq, ev))
        return during

    def release(self) -> list[ExchangeEvent]:
        """Every event now deliverable, oldest first, never reordering within a kind."""
        now = self.now()
        out: list[ExchangeEvent] = []
        held = self._held
        while True:
            best: deque[tuple[int, int, ExchangeEvent]] | None = None
            best_seq = 0
            for q in held.values():
                if q and q[0][0] <= now and (best is None or q[0][1] < best_seq):
                    best, best_seq = q, q[0][1]
            if best is None:
                return out
            out.append(best.popleft()[2])

    @property
    def held_count(self) -> int:
        """Events produced and not yet released (late ones and those queued behind them)."""
        return sum(len(q) for q in self._held.values())

    # ------------------------------------------------------------------ deferred executions

    def schedule(self, due_ms: int, run: Callable[[], object], fate: EventFate | None) -> None:
        self._action_seq += 1
        heapq.heappush(self._actions, _Action(due_ms, self._action_seq, run, fate))

    def pop_due(self) -> _Action | None:
        if self._actions and self._actions[0].due_ms <= self.now():
            return heapq.heappop(self._actions)
        return None

    @property
    def pending_actions(self) -> int:
        return len(self._actions)

    # ------------------------------------------------------------------ income history

    def note_incomes(self, rows: list[Income]) -> None:
        """Stamp rows booked since the last call with the clock time they become visible."""
        now = self.now()
        for row in rows:
            delay = self.dice.income_delay_ms()
            if delay > 0:
                self._income_visible[id(row)] = now + delay
                self.stats["income_delayed"] += 1
        self._income_seen += len(rows)

    @property
    def income_seen(self) -> int:
        return self._income_seen

    def visible(self, row: Income) -> bool:
        at = self._income_visible.get(id(row))
        return at is None or at <= self.now()


def scripted_market(
    eng: MatchingEngine,
    h: HostileState,
    symbol: str,
    side: OrderSide,
    quantity: float,
    reduce_only: bool,
    client_order_id: str,
    script: OrderScript,
) -> OrderResult:
    """Accept a MARKET order, then run now (not acknowledged, no gap) or schedule on the clock its
    executions and its expiry; returns the REST answer (NEW and nothing executed for an ACK)."""
    h.stats.update(
        k
        for k, on in (
            ("ack", script.ack),
            ("split", len(script.executions) > 1),
            ("expire", script.expire),
            ("timeout", script.timeout),
        )
        if on
    )
    oid = eng.submit_market(
        symbol, side, quantity, reduce_only=reduce_only, client_order_id=client_order_id
    ).order_id
    fracs: tuple[float, ...] = script.executions or ((1.0,) if not script.expire else ())
    now = h.now()
    start = now + (round(script.fill_delay_s * 1000) if script.ack else 0)
    gap = round(script.execution_gap_s * 1000)
    steps: list[tuple[int, Callable[[], object]]] = []
    for k, f in enumerate(fracs):
        qty = None if (k == len(fracs) - 1 and not script.expire) else quantity * f
        steps.append((start + k * gap, lambda q=qty: eng.fill_order(symbol, oid, q)))
    if script.expire:
        steps.append((start + len(fracs) * gap, lambda: eng.expire_order(symbol, oid)))
    for due, run in steps:
        if not script.ack and due <= now:
            run()
        else:
            h.schedule(due, run, script.events)
    if script.ack:
        return OrderResult(order_id=oid, status=OrderStatus.NEW, executed_qty=0.0, avg_price=0.0)
    o = eng.order(symbol, oid)
    return OrderResult(order_id=oid, status=o.status, executed_qty=o.executed_qty, avg_price=o.avg_price)
