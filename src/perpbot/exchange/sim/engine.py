"""Deterministic, I/O-free simulated Binance USDT-M futures account (the matching engine).

The backtester drives this object directly; a later paper-trading server will wrap it behind
Binance's REST and WebSocket protocol. It therefore never reads the wall clock, never sleeps and
never talks to the network: time is the close time of the last processed candle.

Model (what is emulated, and why)
---------------------------------
* One-way position mode, one position per symbol, USDT wallet. Every position is margined as
  **isolated** (the bot always sets ISOLATED, SPEC §13 row 19); ``set_margin_type`` is tracked
  for reporting and for Binance's -4046 answer, but a CROSSED symbol is margined the same way.
* Wallet accounting: ``wallet`` is Binance's wallet balance (cross part + every isolated
  margin). An entry moves ``qty·price/leverage`` into the position's isolated wallet ``iw``;
  commissions and realised PnL go to the wallet; a reduction releases ``iw`` pro rata; funding
  is paid into/out of ``iw`` (so it moves the liquidation price, as on Binance). Available
  balance for a new order is ``wallet − Σ iw``.
* Liquidation price (Binance isolated formula, one bracket, maintenance amount 0)::

      long : LP = (q·EP − iw) / (q·(1 − mmr))        short: LP = (q·EP + iw) / (q·(1 + mmr))

  The mark price is approximated by the trade-price path of the candle. On liquidation the
  position is closed at LP whatever the bar did (a gap through LP is absorbed by the insurance
  fund, not the user): realised PnL ``rp = side·(LP − EP)·q``; what remains of the isolated
  margin, ``iw + rp`` (≈ mmr·q·LP), is taken as the clearance fee up to
  ``liquidation_fee_rate·q·LP`` (INSURANCE_CLEAR income row); the rest, if any, returns to the
  wallet. With the defaults (mmr 0.5 % < fee 1.25 %) the whole isolated margin is lost.
* Fees: every fill is a taker fill (``taker_fee`` on notional); ``maker_fee`` is kept for a
  future limit-order model. Slippage: ``slippage_bps`` adverse on market fills and on triggered
  conditional fills (gap fills included); liquidation fills carry none.
* Market orders fill at the next tradable price: after ``process_bar(symbol, i)`` that is
  ``open[i+1]`` (``close[i]`` at the last bar), because the bot acts on a closed candle. The
  notional check (-4164) uses the last price ``close[i]`` (what the bot sized with); the margin
  check (-2019) uses the fill price.
* Conditional orders live in a separate algo book with their own ids. Trigger rule (last-price
  triggers): STOP_MARKET BUY and TAKE_PROFIT_MARKET SELL fire when price ≥ trigger;
  STOP_MARKET SELL and TAKE_PROFIT_MARKET BUY fire when price ≤ trigger. Placing one that would
  fire at the last price is -2021. A reduce-only order that fires while flat (or on a position
  of the wrong side) is REJECTED by the matching engine (ALGO_UPDATE status REJECTED, no order
  is created) — the exchange does not cancel siblings, the bot must.

Intra-bar path (``process_bar``)
--------------------------------
1. Funding: when ``open_time[i] % 8h == 0`` and a position is open, ``payment =
   −sign(pos)·|pos|·open[i]·rate`` (longs pay positive funding) is applied to the wallet and the
   isolated margin; FUNDING_FEE income row (time = ``open_time[i]``) and
   ACCOUNT_UPDATE(FUNDING_FEE). ``rate`` is the rate settled at that mark, read from the row the
   data's funding convention names (``data.schema.settled_funding``: row i, or row i+1 when the
   recording shows the new rate one row late).
2. Gap at the open: every trigger (conditional or liquidation) already beyond ``open[i]`` fires
   at the open (fill = open ± slippage; liquidation at LP), in the order in which a continuous
   move from the previous close to the open would have crossed them (nearest to the previous
   close first; on a tie conditional orders before liquidation, then by algo id). A stop that
   gaps past LP therefore fills at the open and realises its whole loss (not capped at the
   isolated margin) — the pessimistic reading of a gap.
3. Inside the bar the price visits four points and every trigger crossed between two points
   fires at its trigger price (± slippage), in crossing order:

   * ``"pessimistic"`` (default): the adverse extreme first — long position ``O→L→H→C``, short
     ``O→H→L→C`` — so when the stop and the take-profit are both inside the bar the stop fills
     first (the same rule as the training labels); when flat the ``"ohlc"`` rule is used.
   * ``"ohlc"``: a bar that closes at or above its open went down first (``O→L→H→C``); a bar
     that closes below its open went up first (``O→H→L→C``).

   Liquidation is a trigger like the others, so it precedes the stop only when LP lies between
   the open and the stop along that path.
4. The bar is closed: last price = ``close[i]``, ``now_ms`` = ``open_time[i] + bar_ms``. Every
   event produced by bar i carries that time (the simulator learns a candle when it closes).

Event sequences (what a bot may rely on)
----------------------------------------
Market order (entry or reduce-only close), per order::

    ORDER_TRADE_UPDATE x=NEW   X=NEW   o=MARKET ot=MARKET  (new order id)
    ORDER_TRADE_UPDATE x=TRADE X=FILLED  (or PARTIALLY_FILLED … FILLED, same order id, when
                                          max_fill_qty_per_execution splits the fill)
    ACCOUNT_UPDATE m=ORDER               (after every TRADE execution)

Triggered conditional order::

    ALGO_UPDATE X=TRIGGERED  triggered_order_id=N
    ORDER_TRADE_UPDATE x=NEW   X=NEW  order id N, o=MARKET, ot=MARKET (or the conditional type
                                      with report_original_type=True), R=true
    ORDER_TRADE_UPDATE x=TRADE X=FILLED (or PARTIALLY_FILLED … FILLED)  + ACCOUNT_UPDATE m=ORDER
    ALGO_UPDATE X=FINISHED   triggered_order_id=N

Every triggered/market fill stamps ``event_time_ms == trade_time_ms == now_ms``. A reduce-only
order larger than the position executes the position size and reports FILLED (``q`` keeps the
requested quantity; ``z`` is what executed). Triggered orders carry the algo's client id.

Liquidation: ``ORDER_TRADE_UPDATE x=CALCULATED X=FILLED o=LIQUIDATION`` (client id
``autoclose-…``), ``ACCOUNT_UPDATE m=ORDER``, then ``ACCOUNT_UPDATE m=INSURANCE_CLEAR`` when a
clearance fee is taken. Algo placement/cancel: ``ALGO_UPDATE`` NEW / CANCELED.

Hostile mode (``sim/faults.py``, driven by ``SimExchange``): ``submit_market`` accepts a MARKET
order (NEW) without executing it; ``fill_order`` executes part or the rest later (``X``
PARTIALLY_FILLED … FILLED, ``l``/``z``); ``expire_order`` ends it ``x=EXPIRED``; ``cancel_order``
ends an open one ``x=CANCELED``; ``deleverage`` closes part of a position
(``x=CALCULATED``, client id ``adl_autoclose``); ``advance_time`` stamps those with the clock's
seconds. ``order`` / ``algo_order`` answer REST queries by id or client id (``registry.py``).

Speed: ``process_bar`` with no position and no algo order returns after a dict lookup and two
assignments; with a position it reads high/low once and compares them with a pre-computed band
(nearest upper and lower trigger) before doing any work.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from perpbot.data.schema import detect_funding_convention, settled_funding
from perpbot.domain.events import (
    AccountUpdate,
    AlgoUpdate,
    BalanceChange,
    ExchangeEvent,
    OrderTradeUpdate,
    PositionChange,
)
from perpbot.domain.types import (
    AccountState,
    AlgoStatus,
    ConditionalOrder,
    Fill,
    Income,
    Order,
    OrderResult,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Side,
    SymbolFilters,
)
from perpbot.exchange.errors import (
    CONDITIONAL_ON_ORDER_ENDPOINT,
    INVALID_LEVERAGE,
    INVALID_MARGIN_TYPE,
    INVALID_ORDER_TYPE,
    INVALID_SYMBOL,
    MARGIN_INSUFFICIENT,
    MARGIN_TYPE_WITH_POSITION,
    NO_NEED_TO_CHANGE_MARGIN_TYPE,
    NO_SUCH_ORDER,
    ORDER_WOULD_IMMEDIATELY_TRIGGER,
    REDUCE_ONLY_REJECTED,
    UNKNOWN_ORDER,
    ExchangeError,
)
from perpbot.exchange.filters import floor_qty, from_steps, snap, steps_of, validate_order
from perpbot.exchange.sim.registry import LiveOrder, OrderRegistry

FUNDING_INTERVAL_MS = 8 * 3600 * 1000
ADL_CLIENT_ID = "adl_autoclose"  # Binance's client id of an auto-deleveraging order
_INF = math.inf
_ASSET = "USDT"

IntrabarPath = Literal["pessimistic", "ohlc"]


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Knobs of the simulated exchange. Defaults are Binance's VIP-0 USDT-M figures."""

    initial_balance: float = 1000.0
    taker_fee: float = 0.0005
    maker_fee: float = 0.0002
    slippage_bps: float = 1.0  # adverse, on market and triggered conditional fills
    maintenance_margin_rate: float = 0.005
    liquidation_fee_rate: float = 0.0125  # cap of the clearance fee, on the notional at LP
    intrabar_path: IntrabarPath = "pessimistic"
    # False: a triggered conditional order's fill reports ot=MARKET, as live does (SPEC §13 row 3,
    # the worst case the bot must survive). True: ot carries STOP_MARKET / TAKE_PROFIT_MARKET.
    report_original_type: bool = False
    # > 0: split every market fill into TRADE executions of at most this quantity (same order
    # id, PARTIALLY_FILLED … FILLED) so that the bot's per-order aggregation is exercised.
    max_fill_qty_per_execution: float = 0.0
    default_leverage: int = 20  # Binance's initial leverage for most symbols
    bar_ms: int = 15 * 60_000

    def __post_init__(self) -> None:
        if self.intrabar_path not in ("pessimistic", "ohlc"):
            raise ValueError(f"intrabar_path must be 'pessimistic' or 'ohlc', got {self.intrabar_path!r}")
        for name in (
            "taker_fee",
            "maker_fee",
            "slippage_bps",
            "maintenance_margin_rate",
            "liquidation_fee_rate",
            "max_fill_qty_per_execution",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not (0 <= self.maintenance_margin_rate < 1):
            raise ValueError("maintenance_margin_rate must be in [0, 1)")
        if not (1 <= self.default_leverage <= 125):
            raise ValueError("default_leverage must be in 1..125")
        if self.bar_ms <= 0:
            raise ValueError("bar_ms must be > 0")


@dataclass(slots=True)
class _Algo:
    """A resting conditional order; ``up`` = fires when the price rises to the trigger."""

    algo_id: int
    client_algo_id: str
    side: OrderSide
    type: OrderType
    quantity: float
    trigger: float
    reduce_only: bool
    time_ms: int
    up: bool


class _Book:
    """Per-symbol market data (memoryviews over read-only arrays) and account state."""

    __slots__ = (
        "algos",
        "armed",
        "close",
        "close_np",
        "dn_max",
        "entry",
        "filters",
        "funding",
        "funding_bars",
        "funding_convention",
        "funding_np",
        "high",
        "high_np",
        "i",
        "iw",
        "leverage",
        "liq",
        "low",
        "low_np",
        "margin_type",
        "n",
        "open",
        "open_np",
        "open_time",
        "open_time_np",
        "qty",
        "symbol",
        "up_min",
    )

    def __init__(self, symbol: str, filters: SymbolFilters, leverage: int) -> None:
        self.symbol = symbol
        self.filters = filters
        self.n = 0
        self.i = -1  # last processed bar
        self.qty = 0.0  # signed position amount
        self.entry = 0.0
        self.iw = 0.0  # isolated wallet
        self.liq = 0.0  # liquidation price, 0 = none
        self.leverage = leverage
        self.margin_type = "CROSSED"  # Binance's default until the bot switches it
        self.algos: dict[int, _Algo] = {}
        self.armed = False  # position open or algo orders resting
        self.up_min = _INF  # nearest trigger above (fires on a rise)
        self.dn_max = -_INF  # nearest trigger below (fires on a fall)
        self.funding_bars: frozenset[int] | None = None
        self.funding_convention: str | None = None


def _ro(a: npt.ArrayLike, dtype: type, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(a, dtype=dtype))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    view = arr.view()
    view.flags.writeable = False
    return view


class MatchingEngine:
    """The simulated account and matching engine. See the module docstring for the model."""

    def __init__(
        self,
        settings: SimSettings | None = None,
        filters: Mapping[str, SymbolFilters] | None = None,
    ) -> None:
        self.settings = settings or SimSettings()
        self._filters: dict[str, SymbolFilters] = dict(filters or {})
        self._books: dict[str, _Book] = {}
        self._wallet = float(self.settings.initial_balance)
        self._events: list[ExchangeEvent] = []
        self._incomes: list[Income] = []
        # Per-symbol rows kept in time order (stable for equal stamps) with their times beside
        # them, so a bot's lookup at each close is a binary search, not a scan of every row.
        self._incomes_by_symbol: dict[str, list[Income]] = {}
        self._income_times: dict[str, list[int]] = {}
        self._fills: list[Fill] = []
        self._registry = OrderRegistry()
        self._next_order_id = 1_000_001
        self._next_algo_id = 9_000_000_001  # a different range, so a mixed-up id is an error
        self._next_trade_id = 1
        self._now = 0
        self._clock_book: _Book | None = None
        self._started = False
        s = self.settings
        self._slip = s.slippage_bps / 10_000.0
        self._bar_ms = s.bar_ms

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
        b = self._books.get(symbol) or _Book(symbol, self._filters[symbol], self.settings.default_leverage)
        b.open_time_np = _ro(open_time_ms, np.int64, "open_time_ms")
        b.open_np = _ro(open, np.float64, "open")
        b.high_np = _ro(high, np.float64, "high")
        b.low_np = _ro(low, np.float64, "low")
        b.close_np = _ro(close, np.float64, "close")
        n = len(b.open_time_np)
        if any(len(a) != n for a in (b.open_np, b.high_np, b.low_np, b.close_np)) or n == 0:
            raise ValueError(f"{symbol}: OHLC arrays must be non-empty and of equal length")
        if n > 1 and not bool(np.all(np.diff(b.open_time_np) > 0)):
            raise ValueError(f"{symbol}: open_time_ms must be strictly increasing")
        # memoryviews index to plain Python scalars at a fraction of numpy's per-item cost.
        b.open_time, b.open, b.high, b.low, b.close = (
            memoryview(a) for a in (b.open_time_np, b.open_np, b.high_np, b.low_np, b.close_np)
        )
        b.n = n
        if funding_rate is not None:
            raw = np.asarray(funding_rate, dtype=np.float64)
            if raw.ndim != 1 or len(raw) != n:
                raise ValueError(f"{symbol}: funding_rate length differs from the candles")
            conv = funding_convention or detect_funding_convention(b.open_time_np, raw, self._bar_ms)
            b.funding_convention = conv
            b.funding_np = _ro(
                settled_funding(b.open_time_np, raw, conv, self._bar_ms), np.float64, "funding_rate"
            )
            b.funding = memoryview(b.funding_np)
            settle = (b.open_time_np % FUNDING_INTERVAL_MS == 0) & np.isfinite(b.funding_np)
            b.funding_bars = frozenset(np.flatnonzero(settle).tolist())
        else:
            b.funding_np = None
            b.funding = None
            b.funding_bars = None
            b.funding_convention = None
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
        if b.armed:  # inlined on purpose: this runs for every bar of every symbol
            fb = b.funding_bars
            if fb is not None and b.qty != 0.0 and i in fb:
                self._settle_funding(b, i)
            if b.high[i] >= b.up_min or b.low[i] <= b.dn_max:
                self._walk(b, i, prev)

    def intrabar_path(self, symbol: str, i: int) -> tuple[float, float, float, float]:
        """The four prices bar ``i`` will visit (open, two extremes, close) under the account's
        current state, i.e. the path ``process_bar(symbol, i)`` walks when called next.

        Why public: the protocol simulator streams intra-candle kline updates along exactly the
        path that triggers orders, so a client watching the stream sees what the engine saw.
        """
        b = self._book(symbol)
        o, h, lo, c = b.open[i], b.high[i], b.low[i], b.close[i]
        p1, p2, _ = self._path(b, o, h, lo, c)
        return (o, p1, p2, c)

    # ------------------------------------------------------------------ account queries

    def quiet(self, symbol: str) -> bool:
        """Nothing on ``symbol``'s book can react to a bar: no position (no funding, no
        liquidation), no resting trigger order, no open order. Processing a bar of a quiet book
        only moves its bar index, and ``process_bar`` accepts gaps, so a backtest may let such
        bars pass unprocessed (the skip-ahead of ``backtest.agenda``)."""
        return not self._books[symbol].armed and not self._registry.has_open(symbol)

    def symbols(self) -> list[str]:
        return list(self._books)

    def symbol_filters(self, symbol: str) -> SymbolFilters:
        if symbol not in self._filters:
            raise ExchangeError(INVALID_SYMBOL, "Invalid symbol.")
        return self._filters[symbol]

    def balance(self) -> float:
        """Wallet balance (Binance ``balance``): cross part plus every isolated margin, no uPnL."""
        return self._wallet

    def available_balance(self) -> float:
        """What a new order may use: wallet minus the isolated margins in use."""
        return self._wallet - sum(b.iw for b in self._books.values())

    def position(self, symbol: str) -> Position | None:
        """The open position of ``symbol`` or None; uPnL at the last price."""
        b = self._book(symbol)
        if b.qty == 0.0:
            return None
        return Position(
            symbol=symbol,
            side=Side.LONG if b.qty > 0 else Side.SHORT,
            quantity=abs(b.qty),
            entry_price=b.entry,
            leverage=b.leverage,
            isolated_margin=b.iw,
            unrealized_pnl=(self.last_price(symbol) - b.entry) * b.qty,
            liquidation_price=b.liq,
        )

    def account_state(self) -> AccountState:
        positions = {s: p for s in self._books if (p := self.position(s)) is not None}
        return AccountState(self._wallet, self.available_balance(), positions)

    def leverage(self, symbol: str) -> int:
        return self._book(symbol).leverage

    def margin_type(self, symbol: str) -> str:
        return self._book(symbol).margin_type

    def open_orders(self, symbol: str) -> list[Order]:
        """Open normal orders: only MARKET orders exist here and they fill at once, so this is empty
        except for a hostile-mode order that was accepted and not yet executed."""
        self._book(symbol)
        return self._registry.open_orders(symbol)

    def open_algo_orders(self, symbol: str) -> list[ConditionalOrder]:
        b = self._book(symbol)
        return [self._conditional(symbol, a, AlgoStatus.NEW) for a in b.algos.values()]

    def income_history(
        self,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        income_types: tuple[str, ...] | list[str] = (),
    ) -> list[Income]:
        """Income rows (REALIZED_PNL, COMMISSION, FUNDING_FEE, INSURANCE_CLEAR) in time order,
        filtered by symbol, ``start_ms ≤ time ≤ end_ms`` and type (all when empty)."""
        types = set(income_types)
        if symbol is None:
            candidates: list[Income] = sorted(self._incomes, key=lambda r: r.time_ms)
            lo, hi = 0, len(candidates)
            if start_ms is not None:
                lo = bisect.bisect_left(candidates, start_ms, key=lambda r: r.time_ms)
            if end_ms is not None:
                hi = bisect.bisect_right(candidates, end_ms, key=lambda r: r.time_ms)
        else:
            candidates = self._incomes_by_symbol.get(symbol, [])
            times = self._income_times.get(symbol, [])
            lo = 0 if start_ms is None else bisect.bisect_left(times, start_ms)
            hi = len(times) if end_ms is None else bisect.bisect_right(times, end_ms)
        return [r for r in candidates[lo:hi] if not types or r.income_type in types]

    def _add_income(self, row: Income) -> None:
        self._incomes.append(row)
        rows = self._incomes_by_symbol.setdefault(row.symbol, [])
        times = self._income_times.setdefault(row.symbol, [])
        at = bisect.bisect_right(times, row.time_ms)
        rows.insert(at, row)
        times.insert(at, row.time_ms)

    def fills(self, symbol: str | None = None) -> list[Fill]:
        """Every execution so far (Binance's account trade list), optionally for one symbol."""
        return [f for f in self._fills if symbol is None or f.symbol == symbol]

    @property
    def has_events(self) -> bool:
        """True when ``pop_events`` would return something (a cheap check for the hot loop)."""
        return bool(self._events)

    def pop_events(self) -> list[ExchangeEvent]:
        """Events produced since the last call, in the order the exchange produced them."""
        ev = self._events
        self._events = []
        return ev

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
        avg = self._execute(b, o, exec_qty, price, last=True)
        return OrderResult(
            order_id=o.order_id, status=OrderStatus.FILLED, executed_qty=exec_qty, avg_price=avg
        )

    def _accept_market(
        self, b: _Book, side: OrderSide, quantity: float, reduce_only: bool, client_order_id: str
    ) -> tuple[LiveOrder, float, float]:
        """Validate a MARKET order and open it (NEW event); returns it, its executable quantity
        and its fill price. Raises the exchange's rejection before anything is recorded."""
        validate_order(b.filters, quantity, self.last_price(b.symbol), reduce_only)
        sgn = 1 if side is OrderSide.BUY else -1
        price = self._next_price(b, sgn)
        pos = b.qty
        if reduce_only:
            if pos == 0.0 or (pos > 0) == (sgn > 0):
                raise ExchangeError(REDUCE_ONLY_REJECTED, "ReduceOnly Order is rejected.")
            exec_qty = min(quantity, abs(pos))
        else:
            exec_qty = quantity
            self._check_margin(b, sgn, exec_qty, price)
        oid = self._new_order_id()
        cid = client_order_id or f"sim-{oid}"
        o = self._open_order(b, oid, cid, side, quantity, reduce_only, OrderType.MARKET)
        return o, exec_qty, price

    # ------------------------------------------------------------------ hostile-mode order control

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
        price = self._next_price(b, sgn)
        last = quantity is None or want >= rest
        if o.reduce_only:
            pos = b.qty
            if pos == 0.0 or (pos > 0) == (sgn > 0):
                return self.expire_order(symbol, order_id)
            if want >= abs(pos):
                want, last = abs(pos), True
        else:
            try:
                self._check_margin(b, sgn, want, price)
            except ExchangeError:
                return self.expire_order(symbol, order_id)
        if want > 0.0:
            self._execute(b, o, want, price, last=last)
        return o.snapshot()

    def expire_order(self, symbol: str, order_id: int) -> Order:
        """End an open order as EXPIRED (``x=EXPIRED``), keeping what it executed (``z``)."""
        b = self._book(symbol)
        o = self._registry.live(order_id)
        if o is None or o.symbol != symbol:
            raise ExchangeError(NO_SUCH_ORDER, "Order does not exist.")
        if o.is_open:
            o.status = OrderStatus.EXPIRED
            self._events.append(self._order_report(o, "EXPIRED", 0.0, 0.0, 0.0, 0.0, 0))
            self._rearm(b)
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
        side = OrderSide.SELL if b.qty > 0 else OrderSide.BUY
        sgn = 1 if side is OrderSide.BUY else -1
        oid = self._new_order_id()
        o = LiveOrder(
            symbol,
            oid,
            ADL_CLIENT_ID,
            side,
            OrderType.LIQUIDATION,
            OrderType.LIQUIDATION,
            q,
            True,
            self.now_ms,
        )
        self._registry.add(o)
        rp = self._apply_fill(b, sgn, q, px, 0.0)
        tid = self._next_trade_id
        self._next_trade_id += 1
        o.done_steps = steps_of(q, b.filters.step_size)
        o.executed, o.notional, o.status = q, q * px, OrderStatus.FILLED
        self._events.append(self._order_report(o, "CALCULATED", q, px, 0.0, rp, tid))
        self._record_fill(b, oid, tid, side, px, q, 0.0, rp, self.now_ms)
        self._events.append(self._account_update("ORDER", b, px))
        self._rearm(b)
        return o.snapshot()

    def advance_time(self, now_ms: int) -> None:
        """Move the exchange clock forward to ``now_ms`` (hostile mode: seconds between candles,
        so that late executions carry later stamps). Never moves it back."""
        if now_ms > self.now_ms:
            self._now = int(now_ms)

    def order(self, symbol: str, order_id: int = 0, client_order_id: str = "") -> Order:
        """``GET /fapi/v1/order`` by order id or client id (finished orders too); -2013 if unknown."""
        self._book(symbol)
        return self._registry.find(symbol, order_id, client_order_id).snapshot()

    def algo_order(self, symbol: str, algo_id: int = 0, client_algo_id: str = "") -> ConditionalOrder:
        """``GET /fapi/v1/algoOrder`` by algo id or client algo id, with its latest status."""
        self._book(symbol)
        return self._registry.find_algo(symbol, algo_id, client_algo_id)

    def incomes_since(self, k: int) -> list[Income]:
        """Income rows in the order they were booked, from the ``k``-th one (adapter bookkeeping)."""
        return self._incomes[k:]

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
        up = (order_type is OrderType.STOP_MARKET) == (side is OrderSide.BUY)
        last = self.last_price(symbol)
        if (up and last >= trigger_price) or (not up and last <= trigger_price):
            raise ExchangeError(ORDER_WOULD_IMMEDIATELY_TRIGGER, "Order would immediately trigger.")
        aid = self._next_algo_id
        self._next_algo_id += 1
        now = self.now_ms
        a = _Algo(
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
        self._rearm(b)
        self._emit_algo(symbol, a, AlgoStatus.NEW)
        return self._conditional(symbol, a, AlgoStatus.NEW)

    def cancel_order(self, symbol: str, order_id: int) -> None:
        """Cancel a normal order. MARKET orders fill at once, so this is -2011, except for a
        hostile-mode order accepted and not yet (fully) executed: it ends CANCELED (``x=CANCELED``,
        ``z`` = what it executed) and its deferred executions do nothing."""
        b = self._book(symbol)
        o = self._registry.live(order_id)
        if o is None or o.symbol != symbol or not o.is_open:
            raise ExchangeError(UNKNOWN_ORDER, f"Unknown order sent (order id {order_id}).")
        o.status = OrderStatus.CANCELED
        self._events.append(self._order_report(o, "CANCELED", 0.0, 0.0, 0.0, 0.0, 0))
        self._rearm(b)

    def cancel_algo(self, symbol: str, algo_id: int) -> None:
        b = self._book(symbol)
        a = b.algos.pop(algo_id, None)
        if a is None:
            raise ExchangeError(UNKNOWN_ORDER, f"Unknown order sent (algo id {algo_id}).")
        self._rearm(b)
        self._emit_algo(symbol, a, AlgoStatus.CANCELED)

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

    # ------------------------------------------------------------------ internals: helpers

    def _book(self, symbol: str) -> _Book:
        b = self._books.get(symbol)
        if b is None:
            raise ExchangeError(INVALID_SYMBOL, f"Invalid symbol {symbol!r}.")
        return b

    def _new_order_id(self) -> int:
        oid = self._next_order_id
        self._next_order_id += 1
        return oid

    def _next_price(self, b: _Book, sgn: int) -> float:
        """Next tradable price with adverse slippage for a taker of sign ``sgn`` (+1 buy)."""
        if b.i < 0:
            base = b.open[0]
        elif b.i + 1 < b.n:
            base = b.open[b.i + 1]
        else:
            base = b.close[b.i]
        return base * (1.0 + sgn * self._slip)

    def _snap_qty(self, b: _Book, q: float) -> float:
        """Remove float drift from a position amount (it is always a whole number of steps)."""
        return snap(q, b.filters.step_size) if q != 0.0 else 0.0

    def _check_margin(self, b: _Book, sgn: int, qty: float, price: float) -> None:
        """-2019 when the opening part of the order cannot be margined (flip: after the close)."""
        pos = b.qty
        close = min(qty, abs(pos)) if pos != 0.0 and (pos > 0) != (sgn > 0) else 0.0
        open_qty = qty - close
        if open_qty <= 0.0:
            return
        avail = self.available_balance()
        if close > 0.0:
            avail += b.iw * close / abs(pos) + (price - b.entry) * close * (1 if pos > 0 else -1)
        need = open_qty * price / b.leverage + qty * price * self.settings.taker_fee
        if need > avail:
            raise ExchangeError(MARGIN_INSUFFICIENT, "Margin is insufficient.")

    def _recompute_liq(self, b: _Book) -> None:
        q = abs(b.qty)
        if q == 0.0:
            b.liq = 0.0
            return
        mmr = self.settings.maintenance_margin_rate
        if b.qty > 0:
            lp = (q * b.entry - b.iw) / (q * (1.0 - mmr))
            b.liq = lp if lp > 0.0 else 0.0
        else:
            b.liq = (q * b.entry + b.iw) / (q * (1.0 + mmr))

    def _rearm(self, b: _Book) -> None:
        """Recompute the trigger band used by the fast path of ``process_bar``."""
        up, dn = _INF, -_INF
        for a in b.algos.values():
            if a.up:
                up = min(up, a.trigger)
            else:
                dn = max(dn, a.trigger)
        if b.qty > 0.0 and b.liq > 0.0:
            dn = max(dn, b.liq)
        elif b.qty < 0.0:
            up = min(up, b.liq)
        b.up_min, b.dn_max = up, dn
        b.armed = b.qty != 0.0 or bool(b.algos)

    # ------------------------------------------------------------------ internals: the bar walk

    def _path(self, b: _Book, o: float, h: float, lo: float, c: float) -> tuple[float, float, float]:
        """The three points visited after the open (see the module docstring)."""
        pessimistic = self.settings.intrabar_path == "pessimistic" and b.qty != 0.0
        down_first = (b.qty > 0.0) if pessimistic else (c >= o)
        return (lo, h, c) if down_first else (h, lo, c)

    def _walk(self, b: _Book, i: int, prev: int) -> None:
        o, h, lo, c = b.open[i], b.high[i], b.low[i], b.close[i]
        ref = b.close[prev] if prev >= 0 else o
        # Gap: triggers already beyond the open fire at the open, nearest to the previous close first.
        while True:
            hit = self._gapped(b, o, ref)
            if hit is None:
                break
            self._fire(b, hit, o)
        cur = o
        for end in self._path(b, o, h, lo, c):
            while True:
                hit, at = self._crossed(b, cur, end)
                if hit is None:
                    break
                self._fire(b, hit, at)
                cur = at
            cur = end

    def _gapped(self, b: _Book, o: float, ref: float) -> _Algo | str | None:
        best: _Algo | str | None = None
        best_key: tuple[float, int, int] = (_INF, 0, 0)
        for a in b.algos.values():
            if (a.trigger <= o) if a.up else (a.trigger >= o):
                key = (abs(a.trigger - ref), 0, a.algo_id)
                if key < best_key:
                    best, best_key = a, key
        if b.qty != 0.0 and b.liq > 0.0 and ((b.qty > 0 and b.liq >= o) or (b.qty < 0 and b.liq <= o)):
            key = (abs(b.liq - ref), 1, 0)
            if key < best_key:
                best = "LIQ"
        return best

    def _crossed(self, b: _Book, cur: float, end: float) -> tuple[_Algo | str | None, float]:
        """The first trigger met moving from ``cur`` to ``end`` and the price where it fires."""
        rising = end >= cur
        best: _Algo | str | None = None
        best_key: tuple[float, int, int] = (_INF, 0, 0)
        best_at = cur
        levels: list[tuple[_Algo | str, float, bool, int, int]] = [
            (a, a.trigger, a.up, 0, a.algo_id) for a in b.algos.values()
        ]
        if b.qty != 0.0 and b.liq > 0.0:
            levels.append(("LIQ", b.liq, b.qty < 0.0, 1, 0))
        for obj, lvl, up, pri, oid in levels:
            if up:
                if lvl <= cur:
                    d, at = 0.0, cur
                elif rising and lvl <= end:
                    d, at = lvl - cur, lvl
                else:
                    continue
            else:
                if lvl >= cur:
                    d, at = 0.0, cur
                elif not rising and lvl >= end:
                    d, at = cur - lvl, lvl
                else:
                    continue
            key = (d, pri, oid)
            if key < best_key:
                best, best_key, best_at = obj, key, at
        return best, best_at

    def _fire(self, b: _Book, hit: _Algo | str, price: float) -> None:
        if hit == "LIQ":
            self._liquidate(b)
        else:
            assert isinstance(hit, _Algo)
            self._trigger(b, hit, price)

    def _trigger(self, b: _Book, a: _Algo, price: float) -> None:
        """A conditional order fires: hand a MARKET order with a new id to the matching engine."""
        del b.algos[a.algo_id]
        sgn = 1 if a.side is OrderSide.BUY else -1
        pos = b.qty
        if a.reduce_only:
            if pos == 0.0 or (pos > 0) == (sgn > 0):
                self._rearm(b)
                self._emit_algo(b.symbol, a, AlgoStatus.REJECTED)
                return
            exec_qty = min(a.quantity, abs(pos))
        else:
            exec_qty = a.quantity
        fill_px = price * (1.0 + sgn * self._slip)
        if not a.reduce_only:
            try:
                self._check_margin(b, sgn, exec_qty, fill_px)
            except ExchangeError:
                self._rearm(b)
                self._emit_algo(b.symbol, a, AlgoStatus.REJECTED)
                return
        oid = self._new_order_id()
        self._emit_algo(b.symbol, a, AlgoStatus.TRIGGERED, oid)
        ot = a.type if self.settings.report_original_type else OrderType.MARKET
        self._run_market(b, oid, a.client_algo_id, a.side, a.quantity, exec_qty, fill_px, a.reduce_only, ot)
        self._emit_algo(b.symbol, a, AlgoStatus.FINISHED, oid)

    # ------------------------------------------------------------------ internals: fills

    def _run_market(
        self,
        b: _Book,
        oid: int,
        cid: str,
        side: OrderSide,
        orig_qty: float,
        exec_qty: float,
        price: float,
        reduce_only: bool,
        original_type: OrderType,
    ) -> float:
        """NEW, then one or more TRADE executions (each followed by ACCOUNT_UPDATE). Returns ap."""
        o = self._open_order(b, oid, cid, side, orig_qty, reduce_only, original_type)
        return self._execute(b, o, exec_qty, price, last=True)

    def _open_order(
        self,
        b: _Book,
        oid: int,
        cid: str,
        side: OrderSide,
        orig_qty: float,
        reduce_only: bool,
        original_type: OrderType,
    ) -> LiveOrder:
        """Register a MARKET order and emit its ``x=NEW`` report."""
        o = LiveOrder(
            b.symbol, oid, cid, side, OrderType.MARKET, original_type, orig_qty, reduce_only, self.now_ms
        )
        self._registry.add(o)
        self._events.append(self._order_report(o, "NEW", 0.0, 0.0, 0.0, 0.0, 0))
        return o

    def _order_report(
        self, o: LiveOrder, x: str, q: float, price: float, fee: float, rp: float, tid: int
    ) -> OrderTradeUpdate:
        now = self.now_ms
        o.update_time_ms = now
        return OrderTradeUpdate(
            event_time_ms=now,
            symbol=o.symbol,
            order_id=o.order_id,
            client_order_id=o.client_order_id,
            side=o.side,
            order_type=o.type,
            original_type=o.original_type,
            execution_type=x,
            status=o.status,
            reduce_only=o.reduce_only,
            quantity=o.quantity,
            last_filled_qty=q,
            cumulative_filled_qty=o.executed,
            last_filled_price=price,
            avg_price=o.avg_price if o.executed > 0.0 else 0.0,
            commission=fee,
            realized_pnl=rp,
            trade_id=tid,
            trade_time_ms=now,
        )

    def _execute(self, b: _Book, o: LiveOrder, exec_qty: float, price: float, *, last: bool) -> float:
        """TRADE executions of ``exec_qty`` at ``price`` (split by ``max_fill_qty_per_execution``),
        each followed by ACCOUNT_UPDATE; the final one reports FILLED when ``last``. Returns ap."""
        now = self.now_ms
        step = b.filters.step_size
        total = steps_of(exec_qty, step)
        chunk = total
        mx = self.settings.max_fill_qty_per_execution
        if mx > 0.0:
            chunk = max(1, steps_of(floor_qty(mx, step), step))
        done = 0
        sgn = 1 if o.side is OrderSide.BUY else -1
        while done < total:
            n = min(chunk, total - done)
            done += n
            o.done_steps += n
            q = from_steps(n, step)
            o.executed = from_steps(o.done_steps, step)
            o.notional += q * price
            fee = q * price * self.settings.taker_fee
            rp = self._apply_fill(b, sgn, q, price, fee)
            tid = self._next_trade_id
            self._next_trade_id += 1
            o.status = OrderStatus.FILLED if (last and done == total) else OrderStatus.PARTIALLY_FILLED
            self._events.append(self._order_report(o, "TRADE", q, price, fee, rp, tid))
            self._record_fill(b, o.order_id, tid, o.side, price, q, fee, rp, now)
            self._events.append(self._account_update("ORDER", b, price))
        if last and total == 0:
            o.status = OrderStatus.FILLED
        self._rearm(b)
        return o.avg_price

    def _apply_fill(self, b: _Book, sgn: int, q: float, price: float, fee: float) -> float:
        """Update position, isolated margin and wallet for one execution; returns realised PnL."""
        pos = b.qty
        rp = 0.0
        if pos == 0.0 or (pos > 0) == (sgn > 0):
            a = abs(pos)
            b.entry = (a * b.entry + q * price) / (a + q)
            b.iw += q * price / b.leverage
            b.qty = self._snap_qty(b, pos + sgn * q)
        else:
            a = abs(pos)
            close = min(q, a)
            rp = (price - b.entry) * close * (1.0 if pos > 0 else -1.0)
            remaining = self._snap_qty(b, a - close)
            if remaining == 0.0:
                b.qty, b.entry, b.iw = 0.0, 0.0, 0.0
            else:
                b.iw -= b.iw * close / a
                b.qty = remaining if pos > 0 else -remaining
            opened = self._snap_qty(b, q - close)
            if opened > 0.0:
                b.qty = sgn * opened
                b.entry = price
                b.iw = opened * price / b.leverage
        self._wallet += rp - fee
        self._recompute_liq(b)
        return rp

    def _record_fill(
        self,
        b: _Book,
        oid: int,
        tid: int,
        side: OrderSide,
        price: float,
        q: float,
        fee: float,
        rp: float,
        now: int,
    ) -> None:
        sym = b.symbol
        self._fills.append(Fill(sym, oid, tid, side, price, q, fee, rp, now))
        if rp != 0.0:
            self._add_income(Income(sym, "REALIZED_PNL", rp, now, str(tid)))
        if fee != 0.0:
            self._add_income(Income(sym, "COMMISSION", -fee, now, str(tid)))

    def _liquidate(self, b: _Book) -> None:
        s = self.settings
        now = self.now_ms
        q = abs(b.qty)
        lp = b.liq
        sgn_pos = 1.0 if b.qty > 0 else -1.0
        side = OrderSide.SELL if b.qty > 0 else OrderSide.BUY
        rp = sgn_pos * (lp - b.entry) * q
        remaining = max(0.0, b.iw + rp)
        clear = min(remaining, s.liquidation_fee_rate * q * lp)
        oid = self._new_order_id()
        tid = self._next_trade_id
        self._next_trade_id += 1
        lo = LiveOrder(
            b.symbol,
            oid,
            f"autoclose-{oid}",
            side,
            OrderType.LIQUIDATION,
            OrderType.LIQUIDATION,
            q,
            True,
            now,
        )
        lo.done_steps, lo.executed, lo.notional = steps_of(q, b.filters.step_size), q, q * lp
        lo.status, lo.update_time_ms = OrderStatus.FILLED, now
        self._registry.add(lo)
        b.qty, b.entry, b.iw, b.liq = 0.0, 0.0, 0.0, 0.0
        self._wallet += rp
        self._events.append(
            OrderTradeUpdate(
                event_time_ms=now,
                symbol=b.symbol,
                order_id=oid,
                client_order_id=f"autoclose-{oid}",
                side=side,
                order_type=OrderType.LIQUIDATION,
                original_type=OrderType.LIQUIDATION,
                execution_type="CALCULATED",
                status=OrderStatus.FILLED,
                reduce_only=True,
                quantity=q,
                last_filled_qty=q,
                cumulative_filled_qty=q,
                last_filled_price=lp,
                avg_price=lp,
                commission=0.0,
                realized_pnl=rp,
                trade_id=tid,
                trade_time_ms=now,
            )
        )
        self._record_fill(b, oid, tid, side, lp, q, 0.0, rp, now)
        self._events.append(self._account_update("ORDER", b, lp))
        if clear > 0.0:
            self._wallet -= clear
            self._add_income(Income(b.symbol, "INSURANCE_CLEAR", -clear, now, str(tid)))
            self._events.append(self._account_update("INSURANCE_CLEAR", b, lp, -clear))
        self._rearm(b)

    def _settle_funding(self, b: _Book, i: int) -> None:
        rate = b.funding[i]
        price = b.open[i]
        payment = -b.qty * price * rate  # signed qty: longs pay a positive rate
        if payment == 0.0:
            return
        self._wallet += payment
        b.iw += payment
        self._recompute_liq(b)
        self._rearm(b)
        t = b.open_time[i]
        self._add_income(Income(b.symbol, "FUNDING_FEE", payment, t, f"funding-{t}"))
        self._events.append(self._account_update("FUNDING_FEE", b, price, payment))

    # ------------------------------------------------------------------ internals: events

    def _account_update(self, reason: str, b: _Book, mark: float, bc: float = 0.0) -> AccountUpdate:
        cross = self.available_balance()
        return AccountUpdate(
            event_time_ms=self.now_ms,
            reason=reason,
            balances=(BalanceChange(_ASSET, self._wallet, cross, bc),),
            positions=(
                PositionChange(
                    b.symbol,
                    b.qty,
                    b.entry,
                    (mark - b.entry) * b.qty if b.qty else 0.0,
                    "isolated" if b.margin_type == "ISOLATED" else "cross",
                    b.iw,
                ),
            ),
        )

    def _emit_algo(self, symbol: str, a: _Algo, status: AlgoStatus, triggered_order_id: int = 0) -> None:
        self._registry.record_algo(
            replace(self._conditional(symbol, a, status), triggered_order_id=triggered_order_id)
        )
        self._events.append(
            AlgoUpdate(
                self.now_ms,
                symbol,
                a.algo_id,
                a.client_algo_id,
                a.side,
                a.type,
                status,
                a.quantity,
                a.trigger,
                a.reduce_only,
                triggered_order_id,
            )
        )

    @staticmethod
    def _conditional(symbol: str, a: _Algo, status: AlgoStatus) -> ConditionalOrder:
        return ConditionalOrder(
            symbol,
            a.algo_id,
            a.side,
            a.type,
            a.quantity,
            a.trigger,
            status,
            a.reduce_only,
            a.client_algo_id,
            a.time_ms,
        )
