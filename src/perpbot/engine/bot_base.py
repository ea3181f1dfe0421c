"""The state every part of ``SymbolBot`` shares, and the small helpers they all use.

Why a base class: the bot is split by responsibility (entry, protection, exit accounting,
recovery; see ``bot.py``) but it is one state machine over one position, one journal and one
exchange; the parts are mixins over this base so that each file holds one job while the state
stays in one place, declared here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from perpbot.aio import STOP_WAIT_S, cancel_and_wait
from perpbot.config import AppConfig
from perpbot.domain.client_ids import candle_open, make_client_id
from perpbot.domain.types import (
    ClosedTrade,
    CloseReason,
    Fill,
    OrderResult,
    OrderSide,
    OrderType,
    Side,
    SymbolFilters,
)
from perpbot.engine.clock import Clock
from perpbot.engine.journal import Journal
from perpbot.engine.kill_switch import KillSwitch
from perpbot.engine.notifier import (
    Notifier,
)
from perpbot.engine.risk import RiskManager
from perpbot.exchange.errors import ExchangeError, ExchangeUnavailable
from perpbot.exchange.port import ExchangePort
from perpbot.ml.decision import EntryFilter

log = logging.getLogger("perpbot.engine.bot")
T = TypeVar("T")

CLOSE_WAIT_S = 10.0  # SPEC §8.6: wait for the reverse close event, then release
ENTRY_FILL_WAIT_S = 10.0
PROTECT_ATTEMPTS = 3  # SPEC §13 row 12
PROTECT_RETRY_S = 1.0
FILTERS_TTL_MS = 24 * 3_600_000  # SPEC §13 row 18: exchange info cached 24 h
START_ATTEMPTS = 5  # start-up recovery on transient errors: 1, 2, 4, 8 s back-off (defect 17)
START_BACKOFF_S = 1.0
# Binance codes whose request may simply be repeated: disconnected, too many requests, timeout,
# overloaded. A network error or 5xx arrives as ``ExchangeUnavailable``.
TRANSIENT_CODES = frozenset({-1001, -1003, -1007, -1008})
HOUR_MS = 3_600_000
READ_ATTEMPTS = 3  # REST reads the accounting depends on: retried on transient errors
REMEMBER = 256  # bounded id maps (own orders, triggered ids, accounted executions)


def reaches_settlement(trade: ClosedTrade) -> bool:
    """The trade was open at a whole hour, where Binance may settle funding (its rows can show
    in the income history after the trade was booked)."""
    return trade.exit_time_ms >= -(-trade.entry_time_ms // HOUR_MS) * HOUR_MS


def bounded_put(store: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Insert and evict the oldest entries beyond ``limit`` (memory stays bounded in long runs)."""
    store[key] = value
    if len(store) > limit:
        store.popitem(last=False)


def is_transient(exc: ExchangeError) -> bool:
    """A failure worth repeating the same request for (network, timeout, overload, rate limit)."""
    return isinstance(exc, ExchangeUnavailable) or exc.code in TRANSIENT_CODES


@dataclass(slots=True, eq=False)
class LocalPosition:
    """The bot's local view of one position (one-way mode: at most one open at a time).

    Identity matters (issue 7 §2.1): every close execution is matched to the position it belongs
    to by the orders known to close it (``close_orders`` / ``close_cids``: our market closes and
    the orders its own SL/TP created), else by executing after its entry. Each position has its
    own close waiter (``done``), so fills of an earlier position never confirm a later close.
    """

    side: Side
    qty: float  # quantity still open
    entry_price: float
    entry_time_ms: int
    entry_order_id: int = 0  # 0 when adopted without a journaled entry
    entry_fee: float | None = None  # known at adoption from the journal; else from the executions
    sl_price: float = 0.0
    tp_price: float = 0.0
    sl_id: int = 0  # algo ids (0 = none placed)
    tp_id: int = 0
    legacy_ids: tuple[int, ...] = ()  # conditional orders found on the normal book at recovery
    closed_qty: float = 0.0  # close executions accumulate until the position is flat
    closed_notional: float = 0.0
    closed_rp: float = 0.0
    closed_fee: float = 0.0
    adopted: bool = False
    entry_qty: float = 0.0  # entered so far (a partial or late entry grows it)
    entry_trade_id: int = 0  # largest trade id of the entry's executions (0: unknown)
    entry_exec_qty: float = 0.0  # of which seen as executions (events or REST)
    entry_exec_fee: float = 0.0
    algo_ids: set[int] = field(default_factory=set)  # every SL/TP ever placed for it
    close_orders: set[int] = field(default_factory=set)
    close_cids: set[str] = field(default_factory=set)
    last_close_order: int = 0
    last_close_cid: str = ""
    last_exit_ms: int = 0
    last_close_price: float = 0.0
    last_types: tuple[OrderType, ...] = ()
    liquidated: bool = False
    booked: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class Execution:
    """One execution of an order of this symbol, from the stream (``l``/``L``) or from REST
    (``userTrades``): the unit of exit accounting, so each is counted exactly once by trade id."""

    order_id: int
    trade_id: int
    side: OrderSide
    qty: float
    price: float
    realized_pnl: float
    commission: float
    time_ms: int
    client_id: str = ""
    liquidation: bool = False
    order_type: OrderType = OrderType.MARKET
    original_type: OrderType = OrderType.MARKET
    avg_price: float = 0.0  # the order's average so far (``ap``), 0 from REST
    rest: bool = False  # read from ``userTrades`` (no report): journaled when it is counted


def execution_of_fill(f: Fill) -> Execution:
    """An execution read from ``userTrades`` (``rest``: journaled when it is counted)."""
    return Execution(
        order_id=f.order_id,
        trade_id=f.trade_id,
        side=f.side,
        qty=f.quantity,
        price=f.price,
        realized_pnl=f.realized_pnl,
        commission=f.commission,
        time_ms=f.time_ms,
        rest=True,
    )


def exec_key(trade_id: int) -> str:
    """Accounting key of an execution (income rows of it carry the same trade id)."""
    return f"t:{trade_id}"


def income_key(income_type: str, trade_id: str) -> str:
    """Accounting key of a funding or clearance income row."""
    return f"i:{income_type}:{trade_id}"


@dataclass(slots=True)
class EntryAcc:
    """The executions of one entry order seen so far (stream or REST)."""

    qty: float = 0.0
    notional: float = 0.0
    fee: float = 0.0
    max_trade_id: int = 0
    time_ms: int = 0
    final: bool = False  # a terminal report (FILLED / EXPIRED / CANCELED) was seen

    @property
    def avg_price(self) -> float:
        return self.notional / self.qty if self.qty > 0 else 0.0


@dataclass(slots=True)
class PendingEntry:
    """An entry order sent whose outcome is unknown (timeout, ACK): resolved by client id first;
    registered with the risk manager meanwhile so that other bots respect the limits."""

    client_id: str
    side: Side
    atr: float
    time_ms: int
    order_id: int = 0
    journal_row: int = 0  # the ENTRY order row: its outcome is written when it is known


@dataclass(frozen=True, slots=True)
class BotState:
    """Read-only snapshot for the runner, the monitor and tests."""

    side: Side | None
    entry_price: float
    qty: float
    entry_time_ms: int
    sl_id: int
    tp_id: int
    sl_price: float
    tp_price: float
    kill_switch: bool


FLAT_STATE = BotState(None, 0.0, 0.0, 0, 0, 0, 0.0, 0.0, False)
FLAT_TRIPPED = BotState(None, 0.0, 0.0, 0, 0, 0, 0.0, 0.0, True)


class BotBase:
    """Shared state and helpers of the bot parts (constructed through ``SymbolBot``)."""

    def __init__(
        self,
        symbol: str,
        config: AppConfig,
        exchange: ExchangePort,
        risk: RiskManager,
        entry_filter: EntryFilter,
        journal: Journal,
        clock: Clock,
        notifier: Notifier,
        *,
        kill_switch: KillSwitch | None = None,
        num_symbols: int | None = None,
    ) -> None:
        self.symbol = symbol
        self._cfg = config
        self._ex = exchange
        self._risk = risk
        self._filter = entry_filter
        self._journal = journal
        self._clock = clock
        self._notifier = notifier
        self.kill_switch = kill_switch if kill_switch is not None else KillSwitch(symbol, journal)
        self._params = config.params_for(symbol)
        self._leverage = config.leverage
        self._n = num_symbols if num_symbols else max(1, len(config.symbols))
        self._close_lock = asyncio.Lock()
        # One decision path at a time: a candle's, a reconciliation pass, a close on demand. The
        # live runtime runs reconcile on a timer aligned with the candle closes; a pass that read
        # the venue while a candle's entry was in flight adopted that entry as a stranger's.
        self._op_lock = asyncio.Lock()
        self._pos: LocalPosition | None = None
        self._recent: deque[LocalPosition] = deque(maxlen=8)  # booked positions (late fills)
        self._pending: PendingEntry | None = None  # an entry whose outcome is not known yet
        self._filters: SymbolFilters | None = None
        self._filters_at = 0
        self._idle = asyncio.Event()  # set while no entry / reverse / close is in flight
        self._idle.set()
        self._entry_acc: OrderedDict[int, EntryAcc] = OrderedDict()  # entry executions by order id
        self._entry_waiters: dict[int, asyncio.Event] = {}
        self._stray_entries: deque[Execution] = deque(maxlen=64)  # entry executions of no position
        self._parked: deque[Execution] = deque(maxlen=64)  # closing executions of no known position
        self._own_cids: OrderedDict[str, CloseReason] = OrderedDict()  # our market closes
        self._own_orders: OrderedDict[int, CloseReason] = OrderedDict()
        self._triggered: OrderedDict[int, int] = OrderedDict()  # order id -> algo id (ALGO_UPDATE)
        self._algo_owner: OrderedDict[int, LocalPosition] = OrderedDict()
        self._algo_kind: OrderedDict[int, CloseReason] = OrderedDict()  # SL / TP by algo id
        self._fired: OrderedDict[int, None] = OrderedDict()  # algo ids that triggered
        # Executions and income rows already in a trade, persisted in the journal so that a
        # restart never counts them again (defect 11).
        self._accounted: set[str] = set(journal.accounted_keys(symbol))
        # Booked trades whose funding rows may still appear (income history lags): (journal id,
        # index in closed_trades, trade); and those whose entry fee could not be read at booking
        # (…, entry order id). The index is None for a trade an earlier process booked: a restart
        # watches those again (``catchup``), and their current values are in ``_restored``.
        self._funding_watch: deque[tuple[int, int | None, ClosedTrade]] = deque(maxlen=16)
        self._fee_watch: deque[tuple[int, int | None, ClosedTrade, int]] = deque(maxlen=16)
        self._restored: dict[int, ClosedTrade] = {}
        self._to_cancel: set[int] = set()  # protective orders whose cancel is not confirmed yet
        # True when this bot's own actions may have left an order open since the last clean
        # orphan check (a flat reconcile skips the two REST reads otherwise).
        self._orders_dirty = True
        # True when a protective order of this bot may exist without the bot knowing its id (a
        # placement whose outcome stayed unknown; and at start, what a previous process left):
        # the next entry first clears the flat symbol's books (``_cancel_stale_protection``).
        self._untracked = True
        self._cancelling: set[int] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self._subscribed = False
        # Client ids issued in the current candle, per intent (``_cid``), and ids this symbol's
        # journal already holds for that candle (a restart must not reuse one).
        self._cid_candle = -1
        self._cid_seq: dict[str, int] = {}
        self._cids_journaled: set[str] = set()
        self.closed_trades: list[ClosedTrade] = []
        self.errors = 0  # per-candle / per-event exceptions caught and logged

    @property
    def _busy(self) -> bool:
        """An entry, reverse or close is in flight: reconcile stays out, re-protection waits."""
        return not self._idle.is_set()

    @_busy.setter
    def _busy(self, value: bool) -> None:
        if value:
            self._idle.clear()
        else:
            self._idle.set()

    def _tol(self) -> float:
        """Half a quantity step: quantities closer than this are equal."""
        f = self._filters
        return f.step_size / 2 if f is not None else 1e-12

    def _journal_rest_fills(self, fills: Sequence[Fill]) -> None:
        """Entry executions read from ``userTrades``, journaled before they are counted (a
        restart finds their fee there: ``_journaled_entry``)."""
        for f in fills:
            self._journal.record_rest_execution(self.symbol, execution_of_fill(f))

    def _account(self, keys: list[str]) -> None:
        """Mark executions / income rows as counted in a trade, persisted before the trade."""
        new = [k for k in keys if k not in self._accounted]
        if new:
            self._accounted.update(new)
            self._journal.record_accounted(self.symbol, new, self._clock.now_ms())

    async def _symbol_filters(self) -> SymbolFilters:
        """Exchange filters cached 24 h on the injected clock; a stale cache beats no cache."""
        now = self._clock.now_ms()
        if self._filters is not None and now - self._filters_at < FILTERS_TTL_MS:
            return self._filters
        try:
            self._filters = await self._ex.symbol_filters(self.symbol)
            self._filters_at = now
        except ExchangeError:
            if self._filters is None:
                raise
            log.warning("%s: exchange info refresh failed; using the cached filters", self.symbol)
        return self._filters

    def _journal_result(self, row: int, res: OrderResult) -> None:
        """The exchange's answer to a MARKET order, persisted before the bot acts on it."""
        self._journal.record_order_result(
            row,
            time_ms=self._clock.now_ms(),
            status=res.status.value,
            order_id=res.order_id,
            avg_price=res.avg_price,
            executed_qty=res.executed_qty,
        )

    def _journal_error(self, row: int, exc: BaseException) -> None:
        """A refused or failed request: the journal shows what was attempted and why it failed."""
        self._journal.record_order_result(row, time_ms=self._clock.now_ms(), status="ERROR", reason=str(exc))

    def _load_journaled_cids(self) -> None:
        """At start: the client ids a previous run of this bot issued in the current candle."""
        candle = candle_open(self._clock.now_ms())
        self._cid_candle = candle
        self._cid_seq.clear()
        self._cids_journaled = {o.client_id for o in self._journal.orders(self.symbol) if o.time_ms >= candle}

    def _cid(self, intent: str) -> str:
        """A new order's client id, deterministic (``domain.client_ids``): symbol, candle open
        time and intent (``entry``, ``close``, ``emerg``, ``sl``, ``tp``), with the intent's
        count in the candle appended from the second on (``sl2``: a genuinely new order, e.g.
        the replacement of an undersized stop). A retry of the same order asks by this id
        instead of sending again. A restart replaying a candle's entry sends the same id (an
        earlier entry still open makes Binance refuse it: never a doubled entry); its closes
        and stops skip the ids the journal holds (an open stop keeps its id in use)."""
        candle = candle_open(self._clock.now_ms())
        if candle != self._cid_candle:
            if self._cid_candle >= 0:
                self._cids_journaled.clear()  # those were stamped with an earlier candle
            self._cid_candle = candle
            self._cid_seq.clear()
        n = self._cid_seq.get(intent, 0)
        while True:
            n += 1
            cid = make_client_id(self.symbol, candle, intent if n == 1 else f"{intent}{n}")
            if intent == "entry" or cid not in self._cids_journaled:
                break
        self._cid_seq[intent] = n
        return cid

    async def _retry(self, call: Callable[[], Awaitable[T]]) -> T:
        """A REST read repeated on transient errors (1 s, 2 s back-off on this bot's clock)."""
        for attempt in range(READ_ATTEMPTS):
            try:
                return await call()
            except ExchangeError as exc:
                if not is_transient(exc) or attempt == READ_ATTEMPTS - 1:
                    raise
                await self._clock.sleep(PROTECT_RETRY_S * 2**attempt)
        raise AssertionError("unreachable")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def wait_background(self) -> None:
        """Let background work (protection re-placement) finish: tests and shutdown."""
        while self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)

    async def stop(self) -> None:
        """Shutdown (SPEC §13 row 28): cancel background work only. Protective orders stay on the
        exchange on purpose; the next start-up verifies them."""
        await asyncio.gather(*(cancel_and_wait(t, STOP_WAIT_S) for t in list(self._bg)))
