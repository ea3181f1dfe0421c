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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TypeVar

from perpbot.domain.events import ExchangeEvent
from perpbot.domain.types import (
    ConditionalOrder,
    Income,
    Order,
    OrderResult,
    OrderSide,
    OrderType,
    Position,
    SymbolFilters,
)
from perpbot.exchange.errors import NO_NEED_TO_CHANGE_MARGIN_TYPE, ExchangeError
from perpbot.exchange.port import EventHandler
from perpbot.exchange.sim.engine import MatchingEngine

log = logging.getLogger(__name__)

T = TypeVar("T")


class SimExchange:
    """Async ``ExchangePort`` backed by the simulated matching engine (no I/O, no wall clock)."""

    def __init__(self, engine: MatchingEngine) -> None:
        self.engine = engine
        self._handlers: list[EventHandler] = []
        self._queue: asyncio.Queue[ExchangeEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0  # events handed to handlers so far (diagnostics)
        self._unfinished = 0  # queued and not yet fully handled

    # ------------------------------------------------------------------ event delivery

    def subscribe(self, handler: EventHandler) -> None:
        """Register a handler; every event goes to every handler, in subscription order."""
        self._handlers.append(handler)

    def publish_pending(self) -> int:
        """Move the engine's new events to the delivery queue; returns how many were moved."""
        events = self.engine.pop_events()
        put = self._queue.put_nowait
        for ev in events:
            put(ev)
        self._unfinished += len(events)
        return len(events)

    def process_bar(self, symbol: str, i: int) -> None:
        """Backtester convenience: ``engine.process_bar`` then ``publish_pending``."""
        self.engine.process_bar(symbol, i)
        if self.engine.has_events:
            self.publish_pending()

    async def start(self) -> None:
        """Start the dispatcher task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="sim-exchange-events")

    async def drain(self) -> None:
        """Return once every queued event (and every event those handlers caused) was handled."""
        if self._task is not None and asyncio.current_task() is self._task:
            raise RuntimeError("drain() called from an event handler would wait for itself")
        self.publish_pending()
        if self._unfinished == 0:  # the common case in a backtest: nothing to wait for
            return
        await self.start()
        task = self._task
        assert task is not None
        join = asyncio.ensure_future(self._queue.join())
        await asyncio.wait((join, task), return_when=asyncio.FIRST_COMPLETED)
        if not join.done():  # the dispatcher died (a BaseException escaped a handler)
            join.cancel()
            exc = None if task.cancelled() else task.exception()
            raise RuntimeError("event dispatcher stopped with events undelivered") from exc

    async def aclose(self) -> None:
        """Stop the dispatcher. Undelivered events stay queued (a later ``drain()`` restarts
        delivery); call ``drain()`` first when every event must be handled before shutdown."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

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

    def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            self.publish_pending()

    # ------------------------------------------------------------------ ExchangePort

    async def symbol_filters(self, symbol: str) -> SymbolFilters:
        return self.engine.symbol_filters(symbol)

    async def balance(self) -> float:
        return self.engine.balance()

    async def position(self, symbol: str) -> Position | None:
        return self.engine.position(symbol)

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        self._call(self.engine.set_leverage, symbol, leverage)

    async def set_isolated_margin(self, symbol: str) -> None:
        """ISOLATED; Binance's "no need to change margin type" (-4046) is success here."""
        try:
            self._call(self.engine.set_margin_type, symbol, "ISOLATED")
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
        return self._call(
            self.engine.market_order,
            symbol,
            side,
            quantity,
            reduce_only=reduce_only,
            client_order_id=client_order_id,
        )

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
        return self._call(
            self.engine.place_algo,
            symbol,
            order_type,
            side,
            quantity,
            trigger_price,
            reduce_only=reduce_only,
            client_algo_id=client_algo_id,
        )

    async def open_orders(self, symbol: str) -> list[Order]:
        return self.engine.open_orders(symbol)

    async def open_conditional_orders(self, symbol: str) -> list[ConditionalOrder]:
        return self.engine.open_algo_orders(symbol)

    async def cancel_order(self, symbol: str, order_id: int) -> None:
        self._call(self.engine.cancel_order, symbol, order_id)

    async def cancel_conditional(self, symbol: str, algo_id: int) -> None:
        self._call(self.engine.cancel_algo, symbol, algo_id)

    async def cancel_all_orders(self, symbol: str) -> None:
        self._call(self.engine.cancel_all_orders, symbol)

    async def cancel_all_conditional(self, symbol: str) -> None:
        self._call(self.engine.cancel_all_algo, symbol)

    async def income_history(
        self, symbol: str, start_ms: int, income_types: tuple[str, ...] = ()
    ) -> list[Income]:
        return self.engine.income_history(symbol, start_ms, None, income_types)
