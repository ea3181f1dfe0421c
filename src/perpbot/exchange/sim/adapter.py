"""``SimExchange``: the ``ExchangePort`` over a ``MatchingEngine``, with in-order event delivery.

Why a queue and one dispatcher task: on Binance the user-data stream delivers events one after
another on one connection, independently of the REST call that caused them. The bot must be
written for that (an event may arrive while it is still inside the call that produced it, or
later). A single dispatcher awaiting handlers one at a time reproduces that ordering guarantee
deterministically, and ``drain()`` gives the backtester a point where the account and every bot
have caught up before time advances.

Deadlock freedom: engine calls never wait for the queue (``publish_pending`` only appends), so a
handler may await any exchange method; the events those produce are appended behind the current
one and delivered after the handler returns. The only forbidden call from inside a handler is
``drain()`` itself (it would wait for the handler that calls it); that raises ``RuntimeError``.

Hostile mode (``faults=FaultPlan(...)``, see ``faults.py`` for the behaviours and how to script
them): every engine event passes through ``HostileState`` (fate, per-type FIFO, release on the
injected clock) before the delivery queue, and market orders may be acknowledged, split, expired
or deferred. Time-based things (late events, deferred fills, income visibility) move only when
the exchange is *touched*: any port call, ``drain()``, ``process_bar()`` or ``release_due()``
first executes what is due and releases what may be delivered. A bot that waits on its clock and
then calls the exchange therefore sees what arrived meanwhile, as it would live.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from perpbot.aio import STOP_WAIT_S, cancel_and_wait
from perpbot.domain.events import ExchangeEvent
from perpbot.domain.types import (
    ConditionalOrder,
    Fill,
    Income,
    Order,
    OrderResult,
    OrderSide,
    OrderType,
    Position,
    SymbolFilters,
)
from perpbot.exchange.errors import NO_NEED_TO_CHANGE_MARGIN_TYPE, ExchangeError, ExchangeUnavailable
from perpbot.exchange.port import EventHandler
from perpbot.exchange.sim.engine import MatchingEngine

if TYPE_CHECKING:  # hostile mode's modules load only when a fault plan is given (issue 13 start-up)
    from perpbot.exchange.sim.faults import EventFate, FaultPlan
    from perpbot.exchange.sim.hostile import HostileState, NowMs

log = logging.getLogger(__name__)

T = TypeVar("T")

_DURING_SPINS = 50  # loop turns a call gives the dispatcher to hand its events over before answering
_TIMEOUT_MSG = (
    "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
)


class SimExchange:
    """Async ``ExchangePort`` backed by the simulated matching engine (no I/O, no wall clock)."""

    def __init__(
        self, engine: MatchingEngine, *, faults: FaultPlan | None = None, clock: NowMs | None = None
    ) -> None:
        """``faults`` switches the hostile mode on; ``clock`` (the bots' clock) times its late
        events, deferred fills and income delays (default: the engine's candle time)."""
        self.engine = engine
        now = clock.now_ms if clock is not None else (lambda: engine.now_ms)
        self.hostile: HostileState | None = None
        if faults is not None:
            from perpbot.exchange.sim.hostile import HostileState

            self.hostile = HostileState(faults, now)
        self._handlers: list[EventHandler] = []
        self._queue: asyncio.Queue[ExchangeEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0  # events handed to handlers so far (diagnostics)
        self._unfinished = 0  # queued and not yet fully handled
        self._drainers: list[asyncio.Future[None]] = []  # ``drain()`` calls waiting

    # ------------------------------------------------------------------ event delivery

    def subscribe(self, handler: EventHandler) -> None:
        """Register a handler; every event goes to every handler, in subscription order."""
        self._handlers.append(handler)

    def publish_pending(self, fate: EventFate | None = None) -> int:
        """Move the engine's new events to the delivery queue (hostile mode: through their fates
        and the per-type holding queues); returns how many entered the queue."""
        h = self.hostile
        events = self.engine.pop_events()
        if h is not None:
            h.admit(events, fate)
            h.note_incomes(self.engine.incomes_since(h.income_seen))
            events = h.release()
        put = self._queue.put_nowait
        for ev in events:
            put(ev)
        self._unfinished += len(events)
        return len(events)

    def release_due(self) -> None:
        """Hostile mode: run the deferred executions that are due and release the events whose
        time has come (also done by every port call, ``drain`` and ``process_bar``)."""
        h = self.hostile
        if h is None:
            return
        self.engine.advance_time(h.now())
        self.publish_pending()  # what the engine produced before (e.g. a bar driven directly)
        self._deleverage_after_new_bars()
        while (action := h.pop_due()) is not None:
            action.run()
            self.publish_pending(action.fate)

    def _deleverage_after_new_bars(self) -> None:
        """Hostile mode: once per newly processed bar of a symbol with a position, ADL part of it
        when the plan says so. Keyed on the engine's bar index, so it also works when the
        backtester drives ``engine.process_bar`` directly and only then touches the adapter."""
        h = self.hostile
        assert h is not None
        eng = self.engine
        for sym in eng.symbols():
            i = eng.bar_index(sym)
            if i < 0 or h.adl_checked.get(sym) == i:
                continue
            h.adl_checked[sym] = i
            pos = eng.position(sym)
            if pos is None:
                continue
            qty = pos.quantity * h.dice.adl_fraction(sym, i)
            if qty >= eng.symbol_filters(sym).step_size:
                eng.deleverage(sym, qty)
                h.stats["adl"] += 1
        self.publish_pending()

    def process_bar(self, symbol: str, i: int) -> None:
        """Backtester convenience: ``engine.process_bar`` then ``publish_pending``. Hostile mode
        also deleverages part of an open position when the plan says so (after the bar)."""
        h = self.hostile
        if h is not None:
            self.release_due()
        self.engine.process_bar(symbol, i)
        if h is not None:
            self._deleverage_after_new_bars()
        if self.engine.has_events:
            self.publish_pending()

    def deleverage(self, symbol: str, quantity: float, price: float | None = None) -> None:
        """Auto-deleverage ``quantity`` of the position now (a test's direct script)."""
        self.release_due()
        self.engine.deleverage(symbol, quantity, price)
        self.publish_pending()

    async def start(self) -> None:
        """Start the dispatcher task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="sim-exchange-events")
            self._task.add_done_callback(self._release_drainers)

    async def drain(self) -> None:
        """Return once every queued event (and every event those handlers caused) was handled.
        The wait is one future the dispatcher resolves after the last event (``_drainers``): a
        join task and ``asyncio.wait`` cost two more loop turns per call (issue 13)."""
        if self._task is not None and asyncio.current_task() is self._task:
            raise RuntimeError("drain() called from an event handler would wait for itself")
        if self.hostile is None and self._unfinished == 0 and not self.engine.has_events:
            return  # nothing queued, nothing to publish: most of a backtest's ~8,000 calls
        self.release_due()
        self.publish_pending()
        if self._unfinished == 0:
            return
        await self.start()
        waiter = asyncio.get_running_loop().create_future()
        self._drainers.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._drainers:
                self._drainers.remove(waiter)

    def _release_drainers(self, task: asyncio.Task[None] | None = None) -> None:
        """Every ``drain()`` returns: the queue is empty; or (``task``, its done callback) fails:
        the dispatcher stopped (``aclose``, a BaseException from a handler), events undelivered."""
        if task is not None and task is not self._task and self._task is not None:
            return  # an earlier dispatcher's late callback: the waits are the new one's
        drainers, self._drainers = self._drainers, []
        cause = None if task is None or task.cancelled() else task.exception()
        for w in (w for w in drainers if not w.done()):
            if task is None:
                w.set_result(None)
            else:
                err = RuntimeError("event dispatcher stopped with events undelivered")
                err.__cause__, err.__suppress_context__ = cause, True
                w.set_exception(err)

    async def aclose(self) -> None:
        """Stop the dispatcher. Undelivered events stay queued (a later ``drain()`` restarts
        delivery); call ``drain()`` first when every event must be handled before shutdown."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            await cancel_and_wait(task, STOP_WAIT_S)

    async def _dispatch(self) -> None:
        q = self._queue
        while True:
            ev = await q.get()
            try:
                for handler in tuple(self._handlers):
                    try:
                        await handler(ev)
                    except Exception:
                        log.exception("event handler %r failed on %s", handler, type(ev).__name__)
            finally:
                self.delivered += 1
                self._unfinished -= 1
                q.task_done()
                if self._unfinished == 0 and self._drainers:
                    self._release_drainers()

    def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            self.publish_pending()

    # ------------------------------------------------------------------ ExchangePort

    async def _mutate(self, method: str, fn: Callable[..., T], *args: object, client_id: str = "") -> T:
        """A state-changing REST call. Hostile mode: the plan may reject it (``fail_code``, nothing
        done), deliver its events before the answer, or time it out after it was executed."""
        h = self.hostile
        if h is None:
            return self._call(fn, *args)
        self.release_due()
        fault = h.dice.call_fault(method, h.ordinal(method), client_id)
        h.count_fault(fault)
        during = h.dice.call_during()
        if fault is not None and fault.fail_code:
            raise ExchangeError(fault.fail_code, f"simulated failure of {method}")
        if fault is not None and fault.lost:
            raise ExchangeUnavailable(_TIMEOUT_MSG)
        try:
            result = fn(*args)
        finally:
            during = self._admit_call_events(fault.events if fault else None) or during
        await self._maybe_during(during)
        if fault is not None and fault.timeout:
            raise ExchangeUnavailable(_TIMEOUT_MSG)
        return result

    def _admit_call_events(self, fate: EventFate | None) -> bool:
        h = self.hostile
        assert h is not None
        during = h.admit(self.engine.pop_events(), fate)
        self.publish_pending()
        return during

    async def _maybe_during(self, during: bool) -> None:
        """Let the dispatcher hand this call's events to the handlers before the call answers
        (bounded: a handler waiting on the caller cannot deadlock the call)."""
        if not during or not self._handlers or asyncio.current_task() is self._task:
            return
        if self.hostile is not None:
            self.hostile.stats["during"] += 1
        await self.start()
        target = self.delivered + self._unfinished
        for _ in range(_DURING_SPINS):
            if self.delivered >= target:
                return
            await asyncio.sleep(0)

    def _read(self, method: str, fn: Callable[..., T], *args: object) -> T:
        """A read-only REST call; hostile mode may fail it (scripted by ordinal). Not a
        coroutine: it never waits (a backtest makes ~11,000 reads, issue 13)."""
        h = self.hostile
        if h is None:
            return fn(*args)
        self.release_due()
        fault = h.dice.read_fault(method, h.ordinal(method))
        if fault is not None:
            h.stats["read_fail"] += 1
        if fault is not None and fault.fail_code:
            raise ExchangeError(fault.fail_code, f"simulated failure of {method}")
        if fault is not None and (fault.timeout or fault.lost):
            raise ExchangeUnavailable(_TIMEOUT_MSG)
        return fn(*args)

    async def symbol_filters(self, symbol: str) -> SymbolFilters:
        return self.engine.symbol_filters(symbol)

    async def balance(self) -> float:
        return self._read("balance", self.engine.balance)

    async def position(self, symbol: str) -> Position | None:
        return self._read("position", self.engine.position, symbol)

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        await self._mutate("set_leverage", self.engine.set_leverage, symbol, leverage)

    async def set_isolated_margin(self, symbol: str) -> None:
        """ISOLATED; Binance's "no need to change margin type" (-4046) is success here."""
        try:
            await self._mutate("set_isolated_margin", self.engine.set_margin_type, symbol, "ISOLATED")
        except ExchangeError as exc:
            if exc.code != NO_NEED_TO_CHANGE_MARGIN_TYPE:
                raise

    async def market_order(
        self,
        symbol: str,
        side: OrderSide,
        quantity: float,
        *,
        reduce_only: bool = False,
        client_order_id: str = "",
    ) -> OrderResult:
        h = self.hostile
        if h is None:
            return self._call(
                self.engine.market_order,
                symbol,
                side,
                quantity,
                reduce_only=reduce_only,
                client_order_id=client_order_id,
            )
        self.release_due()
        fault = h.plan.calls.get(("market_order", h.ordinal("market_order"))) or h.dice.lost_request()
        h.count_fault(fault)
        if fault is not None and fault.fail_code:
            raise ExchangeError(fault.fail_code, "simulated failure of market_order")
        if fault is not None and fault.lost:
            raise ExchangeUnavailable(_TIMEOUT_MSG)
        script = h.dice.order_script(client_order_id)
        during = h.dice.call_during()
        fate = script.events if script is not None else (fault.events if fault else None)
        try:
            if script is None:
                r = self.engine.market_order(
                    symbol, side, quantity, reduce_only=reduce_only, client_order_id=client_order_id
                )
            else:
                from perpbot.exchange.sim.hostile import scripted_market

                r = scripted_market(
                    self.engine, h, symbol, side, quantity, reduce_only, client_order_id, script
                )
        finally:
            during = self._admit_call_events(fate) or during
        await self._maybe_during(during)
        if (script is not None and script.timeout) or (fault is not None and fault.timeout):
            raise ExchangeUnavailable(_TIMEOUT_MSG)
        return r

    async def place_conditional(
        self,
        symbol: str,
        order_type: OrderType,
        side: OrderSide,
        quantity: float,
        trigger_price: float,
        *,
        reduce_only: bool = True,
        client_algo_id: str = "",
    ) -> ConditionalOrder:
        def place() -> ConditionalOrder:
            return self.engine.place_algo(
                symbol,
                order_type,
                side,
                quantity,
                trigger_price,
                reduce_only=reduce_only,
                client_algo_id=client_algo_id,
            )

        return await self._mutate("place_conditional", place, client_id=client_algo_id)

    async def open_orders(self, symbol: str) -> list[Order]:
        return self._read("open_orders", self.engine.open_orders, symbol)

    async def open_conditional_orders(self, symbol: str) -> list[ConditionalOrder]:
        return self._read("open_conditional_orders", self.engine.open_algo_orders, symbol)

    async def cancel_order(self, symbol: str, order_id: int) -> None:
        await self._mutate("cancel_order", self.engine.cancel_order, symbol, order_id)

    async def cancel_conditional(self, symbol: str, algo_id: int) -> None:
        await self._mutate("cancel_conditional", self.engine.cancel_algo, symbol, algo_id)

    async def cancel_all_orders(self, symbol: str) -> None:
        await self._mutate("cancel_all_orders", self.engine.cancel_all_orders, symbol)

    async def cancel_all_conditional(self, symbol: str) -> None:
        await self._mutate("cancel_all_conditional", self.engine.cancel_all_algo, symbol)

    async def income_history(
        self, symbol: str, start_ms: int, income_types: tuple[str, ...] = ()
    ) -> list[Income]:
        rows = self._read("income_history", self.engine.income_history, symbol, start_ms, None, income_types)
        h = self.hostile
        return rows if h is None else [r for r in rows if h.visible(r)]

    # ------------------------------------------------------------------ recovery reads (ExchangePort)

    async def get_order(self, symbol: str, *, order_id: int = 0, client_order_id: str = "") -> Order:
        """``GET /fapi/v1/order`` by id or client id; -2013 when unknown."""
        return self._read("get_order", self.engine.order, symbol, order_id, client_order_id)

    async def get_conditional(
        self, symbol: str, *, algo_id: int = 0, client_algo_id: str = ""
    ) -> ConditionalOrder:
        """``GET /fapi/v1/algoOrder`` by algo id or client algo id; -2013 when unknown."""
        return self._read("get_conditional", self.engine.algo_order, symbol, algo_id, client_algo_id)

    async def user_trades(self, symbol: str, start_ms: int = 0) -> list[Fill]:
        """``GET /fapi/v1/userTrades``: this symbol's executions with ``time >= start_ms``."""
        return self._read("user_trades", self.engine.fills, symbol, start_ms)
