"""The state every part of ``SymbolBot`` shares, and the small helpers they all use.

Why a base class: the bot is split by responsibility (entry, protection, exit accounting,
recovery; see ``bot.py``) but it is one state machine over one position, one journal and one
exchange; the parts are mixins over this base so that each file holds one job while the state
stays in one place, declared here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from perpbot.config import AppConfig
from perpbot.domain.types import (
    ClosedTrade,
    CloseReason,
    OrderResult,
    Side,
    SymbolFilters,
)
from perpbot.engine.clock import Clock
from perpbot.engine.close_tracker import CloseTracker
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

CLOSE_WAIT_S = 10.0  # SPEC §8.6: wait for the reverse close event, then release
ENTRY_FILL_WAIT_S = 10.0
PROTECT_ATTEMPTS = 3  # SPEC §13 row 12
PROTECT_RETRY_S = 1.0
FALLBACK_STOP_FRACTION = 0.01  # recovery without ATR and without a journaled trigger price
FILTERS_TTL_MS = 24 * 3_600_000  # SPEC §13 row 18: exchange info cached 24 h
START_ATTEMPTS = 5  # start-up recovery on transient errors: 1, 2, 4, 8 s back-off (defect 17)
START_BACKOFF_S = 1.0
# Binance codes whose request may simply be repeated: disconnected, too many requests, timeout,
# overloaded. A network error or 5xx arrives as ``ExchangeUnavailable``.
TRANSIENT_CODES = frozenset({-1001, -1003, -1007, -1008})
HOUR_MS = 3_600_000
REMEMBER = 256  # bounded id maps (own orders, triggered ids, accounted executions)


def is_transient(exc: ExchangeError) -> bool:
    """A failure worth repeating the same request for (network, timeout, overload, rate limit)."""
    return isinstance(exc, ExchangeUnavailable) or exc.code in TRANSIENT_CODES


@dataclass(slots=True)
class LocalPosition:
    """The bot's local view of its open position (one-way mode: at most one)."""

    side: Side
    qty: float  # quantity still open
    entry_price: float
    entry_time_ms: int
    entry_order_id: int = 0  # 0 when adopted without a journaled entry
    entry_fee: float | None = None  # known at adoption from the journal; else from the tracker
    sl_price: float = 0.0
    tp_price: float = 0.0
    sl_id: int = 0  # algo ids (0 = none placed)
    tp_id: int = 0
    legacy_ids: tuple[int, ...] = ()  # conditional orders found on the normal book at recovery
    closed_qty: float = 0.0  # partial closes accumulate until the position is flat
    closed_notional: float = 0.0
    closed_rp: float = 0.0
    closed_fee: float = 0.0
    adopted: bool = False


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
        self._tracker = CloseTracker(symbol)
        self._close_lock = asyncio.Lock()
        self._pos: LocalPosition | None = None
        self._filters: SymbolFilters | None = None
        self._filters_at = 0
        self._busy = False  # an entry or reverse is in flight (reconcile stays out)
        self._closed_evt: asyncio.Event | None = None
        self._entry_waiters: dict[int, asyncio.Event] = {}
        self._own_cids: OrderedDict[str, CloseReason] = OrderedDict()  # our market closes
        self._own_orders: OrderedDict[int, CloseReason] = OrderedDict()
        self._triggered: OrderedDict[int, CloseReason] = OrderedDict()  # from ALGO_UPDATE
        self._late: OrderedDict[int, LocalPosition] = OrderedDict()  # released on timeout, by order id
        self._accounted: OrderedDict[str, None] = OrderedDict()  # execution ids already in a trade
        self._cancelling: set[int] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self._subscribed = False
        self._seq = 0
        self.closed_trades: list[ClosedTrade] = []
        self.errors = 0  # per-candle / per-event exceptions caught and logged

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

    def _cid(self, tag: str) -> str:
        """Client order id: ``pb<tag>-<time>-<seq>`` (≤ 36 chars, Binance's allowed characters)."""
        self._seq += 1
        return f"pb{tag}-{self._clock.now_ms()}-{self._seq}"

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
        for task in list(self._bg):
            task.cancel()
        await asyncio.gather(*list(self._bg), return_exceptions=True)
