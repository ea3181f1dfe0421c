"""The exchange port: exactly what a bot needs from an exchange, nothing more.

The simulated exchange (backtest), the paper-trading server client and the live Binance adapter
all implement this protocol; the bot is written against it alone. Every method is async because
live calls are network calls; the simulator answers without awaiting anything real.

Events (``ORDER_TRADE_UPDATE``, ``ALGO_UPDATE``, ``ACCOUNT_UPDATE``) are pushed to handlers
registered with ``subscribe``; an adapter delivers them in the order the exchange produced them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from typing import Protocol, runtime_checkable

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

EventHandler = Callable[[ExchangeEvent], Awaitable[None]]

# True while the calling task protects a position (places SL/TP, reads the algo book and the
# position to decide which, closes it in an emergency).
PROTECTING: ContextVar[bool] = ContextVar("perpbot_protecting", default=False)


class protecting:
    """Mark the requests made inside as protecting a position: an adapter that shares a request
    budget (Binance's weight per IP and minute) lets them pass ahead of history reads, so a
    preload or a catch-up cannot leave a position without its stop for up to a minute. A
    context, not a parameter: the port's methods stay the same for every venue. A plain class,
    not a generator context: every reconcile pass of a bot in a position enters one (issue 13)."""

    __slots__ = ("_token",)
    _token: Token[bool]

    def __enter__(self) -> None:
        self._token = PROTECTING.set(True)

    def __exit__(self, *exc: object) -> None:
        PROTECTING.reset(self._token)


@runtime_checkable
class ExchangePort(Protocol):
    """Async USDT-M futures account operations. Failures raise ``ExchangeError``."""

    async def symbol_filters(self, symbol: str) -> SymbolFilters:
        """Tick size, step size, minimum quantity and notional of ``symbol``."""
        ...

    async def balance(self) -> float:
        """USDT wallet balance (Binance ``balance`` field of the futures account)."""
        ...

    async def position(self, symbol: str) -> Position | None:
        """The open position of ``symbol`` (one-way mode), or None when flat."""
        ...

    async def set_leverage(self, symbol: str, leverage: int) -> None: ...

    async def set_isolated_margin(self, symbol: str) -> None:
        """Switch ``symbol`` to ISOLATED; "no need to change" (-4046) is not an error here."""
        ...

    async def market_order(
        self,
        symbol: str,
        side: OrderSide,
        quantity: float,
        *,
        reduce_only: bool = False,
        client_order_id: str = "",
    ) -> OrderResult:
        """MARKET order on the normal endpoint. Conditional types are not accepted here (-4120)."""
        ...

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
        """STOP_MARKET / TAKE_PROFIT_MARKET in the algo-order service; returns it with its algo id."""
        ...

    async def open_orders(self, symbol: str) -> list[Order]:
        """Open normal orders (algo orders are not listed here, as on Binance)."""
        ...

    async def open_conditional_orders(self, symbol: str) -> list[ConditionalOrder]:
        """Open algo orders."""
        ...

    async def cancel_order(self, symbol: str, order_id: int) -> None: ...

    async def cancel_conditional(self, symbol: str, algo_id: int) -> None: ...

    async def cancel_all_orders(self, symbol: str) -> None:
        """Cancel normal open orders only (Binance's cancel-all leaves algo orders alone)."""
        ...

    async def cancel_all_conditional(self, symbol: str) -> None: ...

    async def income_history(
        self, symbol: str, start_ms: int, income_types: tuple[str, ...] = ()
    ) -> list[Income]:
        """Income rows for ``symbol`` since ``start_ms`` (all types when ``income_types`` is empty)."""
        ...

    # Recovery reads: after a timeout, an ACK (``NEW``) answer, a dropped stream event or a
    # restart the bot finds out what the exchange really did, by the ids it chose itself (SPEC §13,
    # issue 7 §2.3/2.5). Unknown ids raise ``ExchangeError`` with Binance's -2013
    # (``errors.NO_SUCH_ORDER``). Required: a bot that cannot ask would have to guess.

    async def get_order(self, symbol: str, *, order_id: int = 0, client_order_id: str = "") -> Order:
        """``GET /fapi/v1/order`` by ``orderId`` or ``origClientOrderId`` (finished orders too):
        status, executed quantity and average price as the exchange knows them now."""
        ...

    async def get_conditional(
        self, symbol: str, *, algo_id: int = 0, client_algo_id: str = ""
    ) -> ConditionalOrder:
        """``GET /fapi/v1/algoOrder`` by ``algoId`` or ``clientAlgoId``: the algo order's latest
        status (NEW, TRIGGERED, FINISHED, CANCELED, REJECTED …) and, once it fired, the id of the
        matching-engine order it created (``triggered_order_id``)."""
        ...

    async def user_trades(self, symbol: str, start_ms: int = 0) -> list[Fill]:
        """``GET /fapi/v1/userTrades``: this symbol's executions with ``time >= start_ms``, in order."""
        ...

    def subscribe(self, handler: EventHandler) -> None:
        """Register a handler for every account event of this account."""
        ...
