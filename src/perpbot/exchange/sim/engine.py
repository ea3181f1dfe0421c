"""Deterministic, I/O-free simulated Binance USDT-M futures account: the matching engine's API.

The backtester drives this object directly; the protocol simulator (``perpbot simulate``) wraps it
behind Binance's REST and WebSocket protocol. It therefore never reads the wall clock, never sleeps
and never talks to the network: time is the close time of the last processed candle.

The model lives in the modules that implement it:

* ``position.py`` — one-way, isolated positions, the isolated wallet and the liquidation price;
* ``clearing.py`` — what an execution does: fills, fees, slippage, liquidation, funding, the
  wallet, and a triggered conditional order's fate;
* ``intrabar.py`` — which triggers a candle fires, in which order and at which price;
* ``reports.py`` — the event sequences a bot may rely on;
* ``book.py`` / ``ledger.py`` / ``registry.py`` — per-symbol state, fills and income rows, orders.

What this module decides (the rules of the API)
-----------------------------------------------
* Market orders fill at the next tradable price: after ``process_bar(symbol, i)`` that is
  ``open[i+1]`` (``close[i]`` at the last bar), because the bot acts on a closed candle. The
  notional check (-4164) uses the last price ``close[i]`` (what the bot sized with); the margin
  check (-2019) uses the fill price.
* Conditional orders live in a separate algo book with their own ids. Placing one that would
  fire at the last price is -2021.
* ``process_bar``: (1) funding, when ``open_time[i] % 8h == 0`` and a position is open (or a
  fill stamped inside the bar changed what was open at the stamp); ``rate`` is the rate settled
  at that mark, read from the row the data's funding convention names
  (``data.schema.settled_funding``: row i, or row i+1 when the recording shows the new rate one
  row late); (2) the intra-bar walk (``intrabar.py``); (3) the bar is closed: last price =
  ``close[i]``, ``now_ms`` = ``open_time[i] + bar_ms``. Every event produced by bar i carries
  that time (the simulator learns a candle when it closes).

Hostile mode (``sim/faults.py``, driven by ``SimExchange``; its methods in ``hostile_orders.py``):
``submit_market`` accepts a MARKET order (NEW) without executing it; ``fill_order`` executes
part or the rest later (``X`` PARTIALLY_FILLED … FILLED, ``l``/``z``); ``expire_order`` ends it
``x=EXPIRED``; ``cancel_order`` ends an open one ``x=CANCELED``; ``deleverage`` closes part of a
position (``x=CALCULATED``, client id ``adl_autoclose``); ``advance_time`` stamps those with the
clock's seconds. ``order`` / ``algo_order`` answer REST queries by id or client id (``registry.py``).

Speed: ``process_bar`` with no position and no algo order returns after a dict lookup and two
assignments; with a position it reads high/low once and compares them with a pre-computed band
(nearest upper and lower trigger, ``book.rearm``) before doing any work.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from perpbot.domain.events import ExchangeEvent
from perpbot.domain.types import (
    AlgoStatus,
    ConditionalOrder,
    OrderResult,
    OrderSide,
    OrderStatus,
    OrderType,
    SymbolFilters,
)
from perpbot.exchange.errors import (
    CONDITIONAL_ON_ORDER_ENDPOINT,
    INVALID_LEVERAGE,
    INVALID_MARGIN_TYPE,
    INVALID_ORDER_TYPE,
    INVALID_SYMBOL,
    MARGIN_TYPE_WITH_POSITION,
    MAX_STOP_ORDERS,
    NO_NEED_TO_CHANGE_MARGIN_TYPE,
    ORDER_WOULD_IMMEDIATELY_TRIGGER,
    REDUCE_ONLY_REJECTED,
    UNKNOWN_ORDER,
    ExchangeError,
)
from perpbot.exchange.filters import validate_order
from perpbot.exchange.sim.account_queries import AccountQueries
from perpbot.exchange.sim.book import Algo, Book, load_bars, next_price, rearm
from perpbot.exchange.sim.clearing import Clearing
from perpbot.exchange.sim.hostile_orders import HostileOrders
from perpbot.exchange.sim.intrabar import path, walk
from perpbot.exchange.sim.registry import LiveOrder
from perpbot.exchange.sim.reports import conditional
from perpbot.exchange.sim.settings import SimSettings

MAX_OPEN_ALGOS = 10  # open conditional orders per symbol (Binance's MAX_NUM_ALGO_ORDERS filter)


def _clock_of(engine: MatchingEngine) -> Callable[[], int]:
    """``engine.now_ms`` for its clearing, through a weak reference: a strong one would make a
    cycle, and a finished engine (its books, fills and events) would then wait for the cyclic
    garbage collector instead of being freed when its last user drops it."""
    ref = weakref.ref(engine)

    def now() -> int:
        e = ref()
        assert e is not None, "a clearing outlived its engine"
        return e.now_ms

    return now


class MatchingEngine(AccountQueries, HostileOrders):
    """The simulated account and matching engine. See the module docstring for the model.

    Why one class of ~35 methods: it is the whole Binance account API the backtester, the hostile
    adapter and the protocol simulator call (market data and clock, orders, algo orders, queries,
    settings). The read-only queries are in ``account_queries.py`` and the orders a fault plan
    executes in ``hostile_orders.py``, both mixed in. Each method validates and answers; the
    mechanics are delegated to ``Clearing`` (executions, money, records) and to the plain
    functions of ``book``/``intrabar``.
    """

    def __init__(
        self,
        settings: SimSettings | None = None,
        filters: Mapping[str, SymbolFilters] | None = None,
    ) -> None:
        self.settings = settings or SimSettings()
        self._filters: dict[str, SymbolFilters] = dict(filters or {})
        self._books: dict[str, Book] = {}
        # One list shared with the clearing, never rebound (``pop_events`` empties it in place).
        self._events: list[ExchangeEvent] = []
        self._clr = Clearing(self.settings, self._books, self._events, _clock_of(self))
        self._registry = self._clr.registry
        self._fire = self._clr.fire
        self._next_algo_id = 9_000_000_001  # a different range from orders, so a mixed-up id is an error
        self._now = 0
        self._clock_book: Book | None = None
        self._started = False
        s = self.settings
        self._slip = s.slippage_bps / 10_000.0
        self._bar_ms = s.bar_ms
        self._pessimistic = s.intrabar_path == "pessimistic"

    # ------------------------------------------------------------------ market data and time

    def add_bars(
        self,
        symbol: str,
        open_time_ms: npt.ArrayLike,
        open: npt.ArrayLike,
        high: npt.ArrayLike,
        low: npt.ArrayLike,
        close: npt.ArrayLike,
        funding_rate: npt.ArrayLike | None = None,
        funding_convention: str | None = None,
    ) -> None:
        """Attach a symbol's candles (read-only views; no copy when already contiguous float64).

        ``symbol`` must have filters. Bars are indexed 0..n-1 in ``process_bar``. A settlement
        charges the rate Binance settled at that mark: ``funding_convention`` (``data.schema``)
        says on which row the recorded column shows it; None detects it from the column.
        """
        if symbol not in self._filters:
            raise ValueError(f"no SymbolFilters for {symbol}")
        if symbol in self._books and self._books[symbol].i >= 0:
            raise ValueError(f"{symbol}: bars cannot be replaced after processing started")
        b = self._books.get(symbol) or Book(symbol, self._filters[symbol], self.settings.default_leverage)
        load_bars(b, open_time_ms, open, high, low, close, funding_rate, funding_convention, self._bar_ms)
        self._books[symbol] = b
        if not self._started:
            self._now = min(int(x.open_time_np[0]) for x in self._books.values())

    def bars(self, symbol: str) -> dict[str, np.ndarray]:
        """The read-only arrays of ``symbol`` (``open_time_ms``, ``open``, ``high``, ``low``, ``close``)."""
        b = self._book(symbol)
        return {
            "open_time_ms": b.open_time_np,
            "open": b.open_np,
            "high": b.high_np,
            "low": b.low_np,
            "close": b.close_np,
        }

    @property
    def now_ms(self) -> int:
        """Close time of the last processed bar (any symbol); monotonic."""
        b = self._clock_book
        if b is not None:
            t = b.open_time[b.i] + self._bar_ms
            if t > self._now:
                self._now = t
            self._clock_book = None
        return self._now

    def bar_index(self, symbol: str) -> int:
        """Index of the last processed bar of ``symbol`` (-1 before the first)."""
        return self._book(symbol).i

    def last_price(self, symbol: str) -> float:
        """``close`` of the last processed bar (``open[0]`` before the first one)."""
        b = self._book(symbol)
        return b.close[b.i] if b.i >= 0 else b.open[0]

    def process_bar(self, symbol: str, i: int) -> None:
        """Let bar ``i`` of ``symbol`` happen: funding, triggers and liquidation, then close it.

        Bars of one symbol must be processed in increasing order (gaps allowed, e.g. a start
        date). See the module docstring for the exact intra-bar rules.
        """
        b = self._books[symbol]
        if not (b.i < i < b.n):
            raise ValueError(f"{symbol}: bar {i} out of order (last {b.i}, n {b.n})")
        prev = b.i
        b.i = i
        self._clock_book = b
        self._started = True
        # inlined on purpose: this runs for every bar of every symbol. A fill stamped after the
        # bar's open (hostile mode moves time inside a candle) may have opened or closed the
        # position after the settlement: ``_settle_funding`` charges what was open at the stamp.
        late = b.last_fill_ms > b.open_time[i]
        if b.armed or late:
            fb = b.funding_bars
            if fb is not None and (b.qty != 0.0 or late) and i in fb:
                self._clr.settle_funding(b, i)
            if b.armed and (b.high[i] >= b.up_min or b.low[i] <= b.dn_max):
                walk(b, i, prev, self._pessimistic, self._fire)

    def intrabar_path(self, symbol: str, i: int) -> tuple[float, float, float, float]:
        """The four prices bar ``i`` will visit (open, two extremes, close) under the account's
        current state, i.e. the path ``process_bar(symbol, i)`` walks when called next.

        Why public: the protocol simulator streams intra-candle kline updates along exactly the
        path that triggers orders, so a client watching the stream sees what the engine saw.
        """
        b = self._book(symbol)
        o, h, lo, c = b.open[i], b.high[i], b.low[i], b.close[i]
        p1, p2, _ = path(b, self._pessimistic, o, h, lo, c)
        return (o, p1, p2, c)

    # ------------------------------------------------------------------ account settings

    def set_leverage(self, symbol: str, leverage: int) -> None:
        b = self._book(symbol)
        if not isinstance(leverage, int) or not (1 <= leverage <= 125):
            raise ExchangeError(INVALID_LEVERAGE, f"Leverage {leverage} is not valid")
        b.leverage = leverage

    def set_margin_type(self, symbol: str, margin_type: str = "ISOLATED") -> None:
        """ISOLATED / CROSSED. Asking for the current type is -4046, as on Binance."""
        b = self._book(symbol)
        mt = margin_type.upper()
        if mt == "CROSS":
            mt = "CROSSED"
        if mt not in ("ISOLATED", "CROSSED"):
            raise ExchangeError(INVALID_MARGIN_TYPE, "The margin type is invalid.")
        if mt == b.margin_type:
            raise ExchangeError(NO_NEED_TO_CHANGE_MARGIN_TYPE, "No need to change margin type.")
        if b.qty != 0.0:
            raise ExchangeError(
                MARGIN_TYPE_WITH_POSITION, "Margin type cannot be changed if there exists position."
            )
        b.margin_type = mt

    # ------------------------------------------------------------------ orders

    def market_order(
        self,
        symbol: str,
        side: OrderSide,
        quantity: float,
        *,
        reduce_only: bool = False,
        client_order_id: str = "",
        order_type: OrderType = OrderType.MARKET,
    ) -> OrderResult:
        """A MARKET order on the normal endpoint, filled at the next tradable price.

        A reduce-only order larger than the position closes the position (executed quantity =
        position size, status FILLED); it never opens the other side.
        """
        b = self._book(symbol)
        if order_type.is_conditional:
            raise ExchangeError(
                CONDITIONAL_ON_ORDER_ENDPOINT,
                "Order type not supported for this endpoint. Please use the Algo Order API.",
            )
        if order_type is not OrderType.MARKET:
            raise ExchangeError(
                INVALID_ORDER_TYPE, f"Invalid orderType {order_type.value} (simulator: MARKET only)."
            )
        o, exec_qty, price = self._accept_market(b, side, float(quantity), reduce_only, client_order_id)
        avg = self._clr.execute(b, o, exec_qty, price, last=True)
        return OrderResult(
            order_id=o.order_id, status=OrderStatus.FILLED, executed_qty=exec_qty, avg_price=avg
        )

    def _accept_market(
        self, b: Book, side: OrderSide, quantity: float, reduce_only: bool, client_order_id: str
    ) -> tuple[LiveOrder, float, float]:
        """Validate a MARKET order and open it (NEW event); returns it, its executable quantity
        and its fill price. Raises the exchange's rejection before anything is recorded."""
        validate_order(b.filters, quantity, self.last_price(b.symbol), reduce_only)
        sgn = 1 if side is OrderSide.BUY else -1
        price = next_price(b, sgn, self._slip)
        pos = b.qty
        if reduce_only:
            if pos == 0.0 or (pos > 0) == (sgn > 0):
                raise ExchangeError(REDUCE_ONLY_REJECTED, "ReduceOnly Order is rejected.")
            exec_qty = min(quantity, abs(pos))
        else:
            exec_qty = quantity
            self._clr.check_margin(b, sgn, exec_qty, price)
        oid = self._clr.new_order_id()
        cid = client_order_id or f"sim-{oid}"
        o = self._clr.open_order(b, oid, cid, side, quantity, reduce_only, OrderType.MARKET)
        return o, exec_qty, price

    def place_algo(
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
        """STOP_MARKET / TAKE_PROFIT_MARKET in the algo book (POST /fapi/v1/algoOrder)."""
        b = self._book(symbol)
        if not order_type.is_conditional:
            raise ExchangeError(
                INVALID_ORDER_TYPE, f"Invalid orderType {order_type.value} for the algo endpoint."
            )
        quantity = float(quantity)
        trigger_price = float(trigger_price)
        validate_order(b.filters, quantity, trigger_price, reduce_only, trigger_price=trigger_price)
        if len(b.algos) >= MAX_OPEN_ALGOS:  # Binance's MAX_NUM_ALGO_ORDERS filter, as the simulator
            raise ExchangeError(MAX_STOP_ORDERS, "Reach max stop order limit.")
        up = (order_type is OrderType.STOP_MARKET) == (side is OrderSide.BUY)
        last = self.last_price(symbol)
        if (up and last >= trigger_price) or (not up and last <= trigger_price):
            raise ExchangeError(ORDER_WOULD_IMMEDIATELY_TRIGGER, "Order would immediately trigger.")
        aid = self._next_algo_id
        self._next_algo_id += 1
        now = self.now_ms
        a = Algo(
            aid,
            client_algo_id or f"sim-algo-{aid}",
            side,
            order_type,
            quantity,
            trigger_price,
            reduce_only,
            now,
            up,
        )
        b.algos[aid] = a
        rearm(b)
        self._clr.emit_algo(symbol, a, AlgoStatus.NEW)
        return conditional(symbol, a, AlgoStatus.NEW)

    def cancel_order(self, symbol: str, order_id: int) -> None:
        """Cancel a normal order. MARKET orders fill at once, so this is -2011, except for a
        hostile-mode order accepted and not yet (fully) executed: it ends CANCELED (``x=CANCELED``,
        ``z`` = what it executed) and its deferred executions do nothing."""
        b = self._book(symbol)
        o = self._registry.live(order_id)
        if o is None or o.symbol != symbol or not o.is_open:
            raise ExchangeError(UNKNOWN_ORDER, f"Unknown order sent (order id {order_id}).")
        self._clr.end_order(b, o, OrderStatus.CANCELED, "CANCELED")

    def cancel_algo(self, symbol: str, algo_id: int) -> None:
        b = self._book(symbol)
        a = b.algos.pop(algo_id, None)
        if a is None:
            raise ExchangeError(UNKNOWN_ORDER, f"Unknown order sent (algo id {algo_id}).")
        rearm(b)
        self._clr.emit_algo(symbol, a, AlgoStatus.CANCELED)

    def cancel_all_orders(self, symbol: str) -> int:
        """Cancel open normal orders (only hostile-mode ones can be open); algo orders are NOT
        touched, as on Binance. Returns how many were cancelled."""
        ids = [o.order_id for o in self.open_orders(symbol)]
        for oid in ids:
            self.cancel_order(symbol, oid)
        return len(ids)

    def cancel_all_algo(self, symbol: str) -> int:
        """Cancel every open algo order of ``symbol``; returns how many were cancelled."""
        b = self._book(symbol)
        ids = sorted(b.algos)
        for aid in ids:
            self.cancel_algo(symbol, aid)
        return len(ids)

    def _book(self, symbol: str) -> Book:
        b = self._books.get(symbol)
        if b is None:
            raise ExchangeError(INVALID_SYMBOL, f"Invalid symbol {symbol!r}.")
        return b
