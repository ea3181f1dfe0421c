"""Hostile-exchange fault plans: how the simulator misbehaves the way Binance does on bad days.

Off by default: ``SimExchange(engine)`` behaves exactly as before. ``SimExchange(engine,
faults=FaultPlan(...), clock=clock)`` turns the faults on. Every random choice comes from
generators seeded by ``FaultPlan.seed`` (one stream per behaviour, so switching one behaviour on
does not reshuffle the others): the same plan and the same sequence of calls give the same
schedule and the same result.

What can go wrong (issue 7 §1), each either at random (``p_*`` probabilities) or scripted:

* a MARKET order answered with an ACK (``NEW``, executed 0), its fills arriving later
  (``OrderScript.ack`` + ``fill_delay_s``);
* a MARKET order EXPIRED with nothing or part executed (``OrderScript.expire`` with or without
  ``executions``);
* partial fills over several executions, ``X`` PARTIALLY_FILLED … FILLED with ``l``/``z``
  (``OrderScript.executions`` fractions, ``execution_gap_s`` seconds apart);
* events handed to the handlers during the REST call that caused them (``Delivery.DURING``), after
  it (``AFTER``, the default), late by seconds of clock time (``LATE``) or never (``DROP``: a dead
  stream; only REST shows what happened; ``dead_stream`` windows drop everything for a while);
* a cancel that fails with a Binance error code (``CallFault.fail_code``, default -1008);
* income-history rows visible only some seconds after they were booked (``income_delay_s``);
* auto-deleveraging of part of a position (``adl`` per (symbol, bar) or ``p_adl_per_bar``;
  ``SimExchange.deleverage`` for a direct call);
* a REST call that times out (``ExchangeUnavailable``) AFTER the exchange executed it
  (``OrderScript.timeout`` / ``CallFault.timeout``, ``p_timeout``), or whose request was lost
  before the exchange saw it (``CallFault.lost``, ``p_lost``: the same error, nothing done);
* a failed read (``calls={("position", 0): CallFault(lost=True)}``, ``p_read_fail``).

Binance's ordering guarantee is kept: events of one type (ORDER_TRADE_UPDATE, ALGO_UPDATE,
ACCOUNT_UPDATE) are delivered in the order they were produced. A late event holds back the later
events of its type (it never overtakes nor is overtaken by them); dropping removes an event
without holding anything back.

Scripting, per order or per call
--------------------------------
* ``orders={"entry-1": OrderScript(ack=True, fill_delay_s=12)}``: the market order with client id
  ``entry-1`` is acknowledged and fills 12 s of clock time later.
* ``orders={"close-1": OrderScript(executions=(0.4, 0.6), execution_gap_s=5, timeout=True)}``:
  40 % fills inside the call, 60 % five seconds later, and the REST call raises a timeout.
* ``calls={("cancel_conditional", 0): CallFault(fail_code=-1008)}``: the first
  ``cancel_conditional`` call fails (the order stays open). Ordinals count per method from 0.
* ``conditionals={"sl-1": CallFault(timeout=True)}``: placing the algo order with client algo id
  ``sl-1`` succeeds on the exchange but the REST call times out.
* ``events=(EventRule(EventFate(Delivery.DROP), client_id="close-1"),)``: every event of that
  order is lost. Rules match on event kind, client id, execution type, status or account-update
  reason; the first matching rule decides. ``OrderScript.events`` overrides for one order.
* ``adl={("XRPUSDT", 120): 0.5}``: half of the position is deleveraged after bar 120.

A scripted order or call ignores the random probabilities; everything else draws from them.

Time and recovery
-----------------
Delays are seconds of the injected clock (the bots' ``SimClock``; without one, the engine's candle
time, so they elapse only when bars do). Nothing runs in the background: due fills and late events
move when the exchange is touched (any port call, ``drain()``, ``process_bar()``,
``release_due()``), as a bot that slept and then calls REST would find them. What really happened
is always readable through REST (``port.ExchangePort``'s recovery reads): ``get_order`` by client id (also
after a timeout, an ACK or a dropped event), ``position``, ``get_conditional``, ``user_trades``
and ``income_history`` (delayed rows included once visible). ``SimExchange.hostile.stats`` counts
how often each behaviour fired; ``.dropped`` holds the lost events.
"""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from perpbot.domain.events import AccountUpdate, AlgoUpdate, ExchangeEvent, OrderTradeUpdate
from perpbot.exchange.errors import SERVER_BUSY

Range = tuple[float, float]


class Delivery(enum.Enum):
    AFTER = "after"  # queued when the call returns (the well-behaved default)
    DURING = "during"  # handed to the handlers before the REST answer returns
    LATE = "late"  # held back for ``delay_s`` seconds of clock time
    DROP = "drop"  # never delivered


@dataclass(frozen=True, slots=True)
class EventFate:
    delivery: Delivery = Delivery.AFTER
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_s < 0:
            raise ValueError("EventFate.delay_s must be >= 0")


AFTER = EventFate()


@dataclass(frozen=True, slots=True)
class EventRule:
    """Fate of the events matching every given criterion (None = any)."""

    fate: EventFate
    kind: str | None = None  # "ORDER_TRADE_UPDATE" | "ALGO_UPDATE" | "ACCOUNT_UPDATE"
    client_id: str | None = None  # o.c of an order report, o.caid of an algo update
    execution_type: str | None = None  # o.x
    status: str | None = None  # o.X (order or algo status value)
    reason: str | None = None  # a.m of an account update

    def matches(self, ev: ExchangeEvent) -> bool:
        if self.kind is not None and event_kind(ev) != self.kind:
            return False
        if isinstance(ev, OrderTradeUpdate):
            cid, x, st, reason = ev.client_order_id, ev.execution_type, ev.status.value, None
        elif isinstance(ev, AlgoUpdate):
            cid, x, st, reason = ev.client_algo_id, None, ev.status.value, None
        else:
            cid, x, st, reason = None, None, None, ev.reason
        return (
            (self.client_id is None or self.client_id == cid)
            and (self.execution_type is None or self.execution_type == x)
            and (self.status is None or self.status == st)
            and (self.reason is None or self.reason == reason)
        )


def event_kind(ev: ExchangeEvent) -> str:
    """Binance's event type name; one ordered delivery queue per kind."""
    if isinstance(ev, OrderTradeUpdate):
        return "ORDER_TRADE_UPDATE"
    if isinstance(ev, AlgoUpdate):
        return "ALGO_UPDATE"
    assert isinstance(ev, AccountUpdate)
    return "ACCOUNT_UPDATE"


@dataclass(frozen=True, slots=True)
class OrderScript:
    """What happens to one MARKET order (matched by its client order id)."""

    ack: bool = False  # REST answers NEW, executed 0; the first execution comes fill_delay_s later
    fill_delay_s: float = 0.0
    # Fractions of the order quantity, one per TRADE execution (the last one takes the rest
    # unless ``expire``). Empty: one execution of everything (or nothing, with ``expire``).
    executions: tuple[float, ...] = ()
    execution_gap_s: float = 0.0  # clock seconds between two executions (0: same instant)
    expire: bool = False  # after the executions the rest EXPIRES
    timeout: bool = False  # the REST call raises ExchangeUnavailable after the exchange acted
    events: EventFate | None = None  # fate of every event of this order (None: rules / random)

    def __post_init__(self) -> None:
        if self.fill_delay_s < 0 or self.execution_gap_s < 0:
            raise ValueError("OrderScript delays must be >= 0")
        if any(not (0 < f <= 1) for f in self.executions) or sum(self.executions) > 1 + 1e-9:
            raise ValueError("OrderScript.executions must be fractions in (0, 1] summing to <= 1")


@dataclass(frozen=True, slots=True)
class CallFault:
    """What happens to one REST call other than a market order (or to a conditional placement)."""

    timeout: bool = False  # executed by the exchange, then ExchangeUnavailable
    fail_code: int = 0  # rejected with this Binance code, nothing executed (0: no failure)
    lost: bool = False  # the request never reached the exchange: ExchangeUnavailable, nothing done
    events: EventFate | None = None  # fate of the events this call produced


@dataclass(frozen=True)
class FaultPlan:
    """A seeded schedule of exchange misbehaviour (see the module docstring)."""

    seed: int = 0
    # --- market orders
    p_ack: float = 0.0
    ack_delay_s: Range = (0.5, 20.0)
    p_split: float = 0.0
    max_executions: int = 3
    execution_gap_s: Range = (0.0, 3.0)
    p_expire: float = 0.0  # half of these execute nothing, half a part
    # --- any mutating REST call (orders, algo orders, cancels)
    p_timeout: float = 0.0
    p_lost: float = 0.0  # the request is lost before the exchange sees it (same error as a timeout)
    p_cancel_fail: float = 0.0
    # --- read-only REST calls (position, balance, open orders, order queries, income, trades)
    p_read_fail: float = 0.0
    cancel_fail_code: int = SERVER_BUSY
    # --- event delivery (per event; DURING per REST call)
    p_during: float = 0.0
    p_late: float = 0.0
    late_delay_s: Range = (1.0, 30.0)
    p_drop: float = 0.0
    # Clock-ms windows [start, end) during which the user stream is dead: every event produced
    # then is lost (a stream that silently stopped, SPEC §13 row 4), whatever the other rules say.
    dead_stream: tuple[tuple[int, int], ...] = ()
    # --- income history
    income_delay_s: Range = (0.0, 0.0)
    # --- auto-deleveraging, checked after each bar with an open position (SimExchange.process_bar)
    p_adl_per_bar: float = 0.0
    adl_fraction: Range = (0.1, 0.9)
    # --- scripts
    orders: Mapping[str, OrderScript] = field(default_factory=dict)
    conditionals: Mapping[str, CallFault] = field(default_factory=dict)
    calls: Mapping[tuple[str, int], CallFault] = field(default_factory=dict)
    events: tuple[EventRule, ...] = ()
    adl: Mapping[tuple[str, int], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("p_ack", "p_split", "p_expire", "p_timeout", "p_lost", "p_cancel_fail", "p_read_fail",
                     "p_during", "p_late", "p_drop", "p_adl_per_bar"):  # fmt: skip
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"FaultPlan.{name} must be in [0, 1], got {v}")
        if self.p_late + self.p_drop > 1.0:
            raise ValueError("FaultPlan.p_late + p_drop must be <= 1")
        for name in ("ack_delay_s", "execution_gap_s", "late_delay_s", "income_delay_s", "adl_fraction"):
            lo, hi = getattr(self, name)
            if lo < 0 or hi < lo:
                raise ValueError(f"FaultPlan.{name} must be a range 0 <= lo <= hi")
        if self.adl_fraction[1] > 1.0:
            raise ValueError("FaultPlan.adl_fraction must lie in [0, 1]")
        if any(end <= start for start, end in self.dead_stream):
            raise ValueError("FaultPlan.dead_stream windows must be (start_ms, end_ms) with end > start")
        if self.max_executions < 2:
            raise ValueError("FaultPlan.max_executions must be >= 2")


class FaultDice:
    """The plan's random decisions, one seeded stream per behaviour."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._rng = {
            name: random.Random(f"{plan.seed}:{name}")
            for name in ("order", "call", "event", "income", "adl", "read", "lost")
        }

    def _hit(self, stream: str, p: float) -> bool:
        # Always draw, so that a stream's sequence does not depend on earlier probabilities.
        return self._rng[stream].random() < p

    def _in(self, stream: str, r: Range) -> float:
        return self._rng[stream].uniform(r[0], r[1])

    def order_script(self, client_order_id: str) -> OrderScript | None:
        """The scripted order, or a random one; None when the order behaves normally."""
        p = self.plan
        scripted = p.orders.get(client_order_id)
        if scripted is not None:
            return scripted
        ack = self._hit("order", p.p_ack)
        delay = self._in("order", p.ack_delay_s)
        split = self._hit("order", p.p_split)
        n = self._rng["order"].randint(2, p.max_executions)
        cuts = sorted(self._rng["order"].random() for _ in range(n - 1))
        gap = self._in("order", p.execution_gap_s)
        expire = self._hit("order", p.p_expire)
        part = self._rng["order"].random() < 0.5
        timeout = self._hit("order", p.p_timeout)
        if not (ack or split or expire or timeout):
            return None
        executions: tuple[float, ...] = ()
        if split:
            edges = [0.0, *cuts, 1.0]
            executions = tuple(b - a for a, b in itertools.pairwise(edges) if b - a > 0)
        if expire:
            executions = (executions[0] if executions else 0.5,) if part else ()
        return OrderScript(
            ack=ack,
            fill_delay_s=delay if ack else 0.0,
            executions=executions,
            execution_gap_s=gap if split else 0.0,
            expire=expire,
            timeout=timeout,
        )

    def call_fault(self, method: str, ordinal: int, client_id: str = "") -> CallFault | None:
        p = self.plan
        scripted = p.calls.get((method, ordinal))
        if scripted is None and client_id:
            scripted = p.conditionals.get(client_id)
        if scripted is not None:
            return scripted
        fail = self._hit("call", p.p_cancel_fail) and method.startswith("cancel")
        timeout = self._hit("call", p.p_timeout)
        lost = self._hit("lost", p.p_lost)
        if fail:
            return CallFault(fail_code=p.cancel_fail_code)
        if lost:
            return CallFault(lost=True)
        if timeout:
            return CallFault(timeout=True)
        return None

    def lost_request(self) -> CallFault | None:
        """A market order's random transport loss (``p_lost``); its other faults are in the script."""
        return CallFault(lost=True) if self._hit("lost", self.plan.p_lost) else None

    def read_fault(self, method: str, ordinal: int) -> CallFault | None:
        """A read's scripted fault, or a random transport failure (``p_read_fail``)."""
        scripted = self.plan.calls.get((method, ordinal))
        if scripted is not None:
            return scripted
        return CallFault(lost=True) if self._hit("read", self.plan.p_read_fail) else None

    def call_during(self) -> bool:
        """Whether this REST call's events reach the handlers before its answer."""
        return self._hit("event", self.plan.p_during)

    def event_fate(self, ev: ExchangeEvent) -> EventFate:
        p = self.plan
        for rule in p.events:
            if rule.matches(ev):
                return rule.fate
        u = self._rng["event"].random()
        delay = self._in("event", p.late_delay_s)
        if u < p.p_drop:
            return EventFate(Delivery.DROP)
        if u < p.p_drop + p.p_late:
            return EventFate(Delivery.LATE, delay)
        return AFTER

    def income_delay_ms(self) -> int:
        return round(self._in("income", self.plan.income_delay_s) * 1000)

    def adl_fraction(self, symbol: str, bar: int) -> float:
        """Fraction of the position to deleverage after ``bar`` (0: none)."""
        p = self.plan
        scripted = p.adl.get((symbol, bar))
        if scripted is not None:
            return scripted
        hit = self._hit("adl", p.p_adl_per_bar)
        frac = self._in("adl", p.adl_fraction)
        return frac if hit else 0.0
