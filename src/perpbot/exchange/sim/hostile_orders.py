"""Hostile mode's order control (``sim/faults.py``, driven by ``SimExchange``): a MARKET order
accepted without executing it, then executed in parts, expired, or a position deleveraged, at
times the fault plan chooses; the exchange clock moved between candles so that late executions
carry later stamps.

Why a module of its own: ``engine.py`` is the account API every mode calls; these five methods
are used only when a fault plan drives the venue, and have one job, an order's lifecycle under
that plan. They reuse the engine's validation (``_accept_market``) and its clearing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perpbot.domain.types import Order, OrderSide, OrderStatus
from perpbot.exchange.errors import NO_SUCH_ORDER, ExchangeError
from perpbot.exchange.filters import floor_qty, from_steps, steps_of
from perpbot.exchange.sim.book import next_price

if TYPE_CHECKING:
    from perpbot.exchange.sim.book import Book
    from perpbot.exchange.sim.clearing import Clearing
    from perpbot.exchange.sim.registry import LiveOrder, OrderRegistry


class HostileOrders:
    """Mixed into ``MatchingEngine`` (the attributes below are the engine's)."""

    _clr: Clearing
    _registry: OrderRegistry
    _slip: float
    _now: int

    if TYPE_CHECKING:

        def _book(self, symbol: str) -> Book: ...

        def _accept_market(
            self, b: Book, side: OrderSide, quantity: float, reduce_only: bool, client_order_id: str
        ) -> tuple[LiveOrder, float, float]: ...

        def last_price(self, symbol: str) -> float: ...

        @property
        def now_ms(self) -> int: ...

    def submit_market(
        self,
        symbol: str,
        side: OrderSide,
        quantity: float,
        *,
        reduce_only: bool = False,
        client_order_id: str = "",
    ) -> Order:
        """Accept a MARKET order (same checks and NEW event as ``market_order``) WITHOUT executing
        it: the hostile adapter then calls ``fill_order`` / ``expire_order`` when its fault plan
        says. Returns the order as a REST query would show it (status NEW, executed 0)."""
        b = self._book(symbol)
        o, _, _ = self._accept_market(b, side, float(quantity), reduce_only, client_order_id)
        return o.snapshot()

    def fill_order(self, symbol: str, order_id: int, quantity: float | None = None) -> Order:
        """Execute (part of) an open MARKET order at the next tradable price.

        ``quantity`` None executes the rest and reports FILLED. A reduce-only order executes at most
        the position (FILLED when that exhausts it); when nothing is left to reduce, or an opening
        order can no longer be margined, the order EXPIRES with what it executed so far.
        """
        b = self._book(symbol)
        o = self._registry.live(order_id)
        if o is None or o.symbol != symbol:
            raise ExchangeError(NO_SUCH_ORDER, "Order does not exist.")
        if not o.is_open:
            return o.snapshot()
        step = b.filters.step_size
        rest = from_steps(steps_of(o.quantity, step) - o.done_steps, step)
        want = rest if quantity is None else min(floor_qty(float(quantity), step), rest)
        sgn = 1 if o.side is OrderSide.BUY else -1
        price = next_price(b, sgn, self._slip)
        last = quantity is None or want >= rest
        if o.reduce_only:
            pos = b.qty
            if pos == 0.0 or (pos > 0) == (sgn > 0):
                return self.expire_order(symbol, order_id)
            if want >= abs(pos):
                want, last = abs(pos), True
        else:
            try:
                self._clr.check_margin(b, sgn, want, price)
            except ExchangeError:
                return self.expire_order(symbol, order_id)
        if want > 0.0:
            self._clr.execute(b, o, want, price, last=last)
        return o.snapshot()

    def expire_order(self, symbol: str, order_id: int) -> Order:
        """End an open order as EXPIRED (``x=EXPIRED``), keeping what it executed (``z``)."""
        b = self._book(symbol)
        o = self._registry.live(order_id)
        if o is None or o.symbol != symbol:
            raise ExchangeError(NO_SUCH_ORDER, "Order does not exist.")
        if o.is_open:
            self._clr.end_order(b, o, OrderStatus.EXPIRED, "EXPIRED")
        return o.snapshot()

    def deleverage(self, symbol: str, quantity: float, price: float | None = None) -> Order:
        """Auto-deleverage (ADL) part or all of the position at ``price`` (default: last price).

        Binance's shape: ``ORDER_TRADE_UPDATE x=CALCULATED X=FILLED o=LIQUIDATION`` with client id
        ``adl_autoclose``, no commission, then ``ACCOUNT_UPDATE m=ORDER``. The remainder (if any)
        stays open with its isolated margin reduced pro rata.
        """
        b = self._book(symbol)
        if b.qty == 0.0:
            raise ExchangeError(NO_SUCH_ORDER, f"{symbol}: no position to deleverage.")
        q = min(floor_qty(float(quantity), b.filters.step_size), abs(b.qty))
        if q <= 0.0:
            raise ValueError(f"{symbol}: deleverage quantity must be at least one step")
        px = self.last_price(symbol) if price is None else float(price)
        o = self._clr.deleverage(b, q, px)
        return o.snapshot()

    def advance_time(self, now_ms: int) -> None:
        """Move the exchange clock forward to ``now_ms`` (hostile mode: seconds between candles,
        so that late executions carry later stamps). Never moves it back."""
        if now_ms > self.now_ms:
            self._now = int(now_ms)
