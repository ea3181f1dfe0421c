"""What the simulated exchange remembers about every order, for the REST reads a client recovers with.

Binance answers ``GET /fapi/v1/order`` (by ``orderId`` or ``origClientOrderId``) and
``GET /fapi/v1/algoOrder`` (by ``algoId`` or ``clientAlgoId``) for finished orders too. A bot
whose REST call timed out, or whose market order was only acknowledged (``NEW``), must be able
to ask "what became of my order?" by the client id it chose. The matching engine keeps the live
state of its orders here; queries return frozen domain snapshots (``Order``,
``ConditionalOrder``). An unknown id is Binance's -2013 "Order does not exist.".

Client ids: Binance keeps the latest order of a client id while it is open; the simulator maps a
client id to its most recent order, which is what a client that reuses no ids needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from perpbot.domain.types import ConditionalOrder, Order, OrderSide, OrderStatus, OrderType
from perpbot.exchange.errors import NO_SUCH_ORDER, ExchangeError


@dataclass(slots=True)
class LiveOrder:
    """A normal order's mutable state inside the engine (quantities in exchange steps)."""

    symbol: str
    order_id: int
    client_order_id: str
    side: OrderSide
    type: OrderType
    original_type: OrderType
    quantity: float
    reduce_only: bool
    time_ms: int
    status: OrderStatus = OrderStatus.NEW
    done_steps: int = 0
    executed: float = 0.0
    notional: float = 0.0
    update_time_ms: int = 0

    @property
    def avg_price(self) -> float:
        return self.notional / self.executed if self.executed > 0.0 else 0.0

    @property
    def is_open(self) -> bool:
        return self.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)

    def snapshot(self) -> Order:
        return Order(
            symbol=self.symbol,
            order_id=self.order_id,
            side=self.side,
            type=self.type,
            quantity=self.quantity,
            status=self.status,
            reduce_only=self.reduce_only,
            executed_qty=self.executed,
            avg_price=self.avg_price,
            client_order_id=self.client_order_id,
            time_ms=self.time_ms,
        )


class OrderRegistry:
    """Every normal order and every algo order's last known state, by id and by client id."""

    __slots__ = ("_algo_cids", "_algos", "_cids", "_open", "_orders")

    def __init__(self) -> None:
        self._orders: dict[int, LiveOrder] = {}
        # Per symbol, the orders that may still be open (pruned lazily when read), so listing open
        # orders costs O(open orders), not O(every order ever): the backtest lists them at every
        # reconcile pass.
        self._open: dict[str, dict[int, LiveOrder]] = {}
        self._cids: dict[tuple[str, str], int] = {}
        self._algos: dict[int, ConditionalOrder] = {}
        self._algo_cids: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ normal orders

    def add(self, o: LiveOrder) -> None:
        self._orders[o.order_id] = o
        if o.is_open:
            self._open.setdefault(o.symbol, {})[o.order_id] = o
        if o.client_order_id:
            self._cids[(o.symbol, o.client_order_id)] = o.order_id

    def live(self, order_id: int) -> LiveOrder | None:
        return self._orders.get(order_id)

    def find(self, symbol: str, order_id: int = 0, client_order_id: str = "") -> LiveOrder:
        """The order by id (preferred) or client id; -2013 when this symbol has no such order."""
        oid = order_id or self._cids.get((symbol, client_order_id), 0)
        o = self._orders.get(oid)
        if o is None or o.symbol != symbol:
            raise ExchangeError(NO_SUCH_ORDER, "Order does not exist.")
        return o

    def open_orders(self, symbol: str) -> list[Order]:
        """The symbol's open orders in the order they were placed."""
        book = self._open.get(symbol)
        if not book:
            return []
        for oid in [oid for oid, o in book.items() if not o.is_open]:
            del book[oid]
        return [o.snapshot() for o in book.values()]

    def has_open(self, symbol: str) -> bool:
        """Whether the symbol has an open order (no snapshots: the skip-ahead asks every step)."""
        book = self._open.get(symbol)
        return bool(book) and any(o.is_open for o in book.values())

    # ------------------------------------------------------------------ algo orders

    def record_algo(self, c: ConditionalOrder) -> None:
        """Store an algo order's latest state (NEW, TRIGGERED, FINISHED, CANCELED, REJECTED …)."""
        self._algos[c.algo_id] = c
        if c.client_algo_id:
            self._algo_cids[(c.symbol, c.client_algo_id)] = c.algo_id

    def find_algo(self, symbol: str, algo_id: int = 0, client_algo_id: str = "") -> ConditionalOrder:
        aid = algo_id or self._algo_cids.get((symbol, client_algo_id), 0)
        c = self._algos.get(aid)
        if c is None or c.symbol != symbol:
            raise ExchangeError(NO_SUCH_ORDER, "Order does not exist.")
        return c
