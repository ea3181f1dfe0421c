"""The risk manager shared by every bot (SPEC §9, §13 rows 14–16).

One instance guards the whole account: the registry of open positions (max 3, at most one per
symbol, at most ``MAX_SAME_DIRECTION`` per side), the daily loss limit (5 % of the base balance,
reset at 00:00 UTC on the *injected* clock so that backtests reset on simulated midnights) and the
global entry lock that serialises "read balance → send order → register" across bots, so that
two bots never size from the same balance (SPEC §13 row 16).

Why every mutating operation is async and takes ``_lock``: the bots run as tasks of one event
loop; today no operation awaits inside the critical section, but the lock keeps the invariant
explicit and survives a future await (e.g. a journal on another thread). The daily reset is
checked under the same lock at the start of every operation, so no operation ever sees
yesterday's PnL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from perpbot.config import MAX_DAILY_LOSS, MAX_POSITIONS, AppConfig
from perpbot.domain.types import Side
from perpbot.engine.clock import Clock
from perpbot.engine.notifier import daily_loss_message
from perpbot.engine.sizing import margin_ratio

if TYPE_CHECKING:
    from perpbot.engine.journal import Journal

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


def utc_day(time_ms: int) -> date:
    """The UTC calendar day of an epoch-millisecond timestamp."""
    return datetime.fromtimestamp(time_ms // DAY_MS * 86_400, tz=UTC).date()


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """Answer of ``can_open``: ``reason`` is "ok" or one of the refusal codes below."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


OK = RiskDecision(True, "ok")
REFUSED_MAX_POSITIONS = RiskDecision(False, "max_positions")
REFUSED_SYMBOL_OPEN = RiskDecision(False, "symbol_open")
REFUSED_SAME_DIRECTION = RiskDecision(False, "max_same_direction")
REFUSED_DAILY_LOSS = RiskDecision(False, "daily_loss_limit")
REFUSED_CLOSE_SETTLING = RiskDecision(False, "close_settling")
REFUSED_STOPPING = RiskDecision(False, "stopping")

# How long an entry waits for a close in flight (any symbol, its own included) to be booked before
# it is refused: the close may be a loss that takes the day past its limit (found by the chaos test:
# two bots reversing on the same candle, one entering while the other's losing close was executed
# but not yet booked).
SETTLE_WAIT_S = 15.0


class RiskManager:
    """Account-wide limits shared by all bots; see the module docstring."""

    def __init__(
        self,
        config: AppConfig,
        clock: Clock,
        *,
        journal: Journal | None = None,
        on_alert: Callable[[str, str], None] | None = None,
    ) -> None:
        self._cfg = config
        # (kind, text) for the operator, called synchronously and at most once per UTC day for
        # the daily-loss block (the runtime queues it on the notifier; it must not block).
        self._on_alert = on_alert
        self._clock = clock
        self._journal = journal
        self._lock = asyncio.Lock()
        self.entry_lock = asyncio.Lock()
        # Symbols whose close is sent or executed but not booked yet (``settling``): their PnL is
        # unknown, so every entry waits for them (``can_enter``).
        self._settling: dict[str, int] = {}
        self._settle_changed = asyncio.Event()
        self.max_positions = MAX_POSITIONS
        self.max_daily_loss = MAX_DAILY_LOSS
        self.max_same_direction = config.max_same_direction
        self._base = 0.0
        self._base_set = False
        self._daily_pnl = 0.0
        self._day = clock.now_ms() // DAY_MS
        self._open: dict[str, Side] = {}
        self._halted = False  # the process is stopping: no new entry (``halt_entries``)
        self._limit_hit_day = -1  # day number whose limit breach was already journaled

    # ---------------------------------------------------------------- read-only views
    @property
    def base_balance(self) -> float:
        return self._base

    @property
    def daily_pnl(self) -> float:
        return self._daily_pnl

    @property
    def day(self) -> date:
        """The UTC day the current ``daily_pnl`` belongs to."""
        return utc_day(self._day * DAY_MS)

    @property
    def open_positions(self) -> dict[str, Side]:
        """A copy of the registry (symbol → side)."""
        return dict(self._open)

    def is_open(self, symbol: str) -> bool:
        return symbol in self._open

    # ---------------------------------------------------------------- set-up
    def set_base_balance(self, balance: float) -> bool:
        """Set the base balance once, before the bots start (SPEC §13 row 15).

        A second call is *ignored* (logged, returns False) rather than raised: the design-point bug
        was every bot overwriting the base at start-up, and ignoring keeps the first, correct value
        without tearing down a bot that calls it by mistake. Returns True when the value was set.
        """
        if self._base_set:
            log.warning("base balance already set to %.4f; ignoring %.4f", self._base, balance)
            return False
        self._base = float(balance)
        self._base_set = True
        self._emit("base_balance_set", f"base balance {balance:.4f}", {"base_balance": balance})
        return True

    def restore(self, daily_pnl: float, day: date) -> None:
        """Rebuild today's PnL from the journal after a restart (``Journal.daily_pnl(day)``).

        A value for another day than the clock's current UTC day is ignored: yesterday's losses
        must not block today's trading.
        """
        today = self._clock.now_ms() // DAY_MS
        self._day = today
        if utc_day(today * DAY_MS) != day:
            log.info("risk restore for %s ignored (today is %s)", day, utc_day(today * DAY_MS))
            return
        self._daily_pnl = float(daily_pnl)
        self._emit("daily_pnl_restored", f"daily PnL restored {daily_pnl:.4f}", {"day": day.isoformat()})

    def restore_from_journal(self, journal: Journal) -> float:
        """Process start-up: rebuild today's realised net PnL from the journal's closed trades.

        Why: the daily-loss gate must survive a restart. Without this a crash (or a deliberate
        restart) on a losing day would zero ``daily_pnl`` and let the bots trade past the 5 %
        limit. "Today" is the injected clock's UTC day, so a restart after 00:00 UTC starts from
        zero, as the midnight reset would have. The live/paper runner calls this once, after
        ``set_base_balance`` and before any bot starts; the kill switch is rebuilt per symbol by
        ``SymbolBot.start`` (``KillSwitch.boot``). Returns the restored PnL.
        """
        today = utc_day(self._clock.now_ms())
        pnl = journal.daily_pnl(today)
        self.restore(pnl, today)
        return pnl

    # ---------------------------------------------------------------- daily reset
    def _check_reset(self) -> None:
        """Zero the daily PnL when the injected clock crossed 00:00 UTC (call under the lock)."""
        today = self._clock.now_ms() // DAY_MS
        if today > self._day:  # forward only: a fill may have started the day already
            self._start_day(today)

    def _start_day(self, day: int) -> None:
        old, self._day = self._daily_pnl, day
        self._daily_pnl = 0.0
        self._emit(
            "daily_reset",
            f"daily PnL reset at 00:00 UTC (was {old:.4f})",
            {"previous_daily_pnl": old, "day": utc_day(day * DAY_MS).isoformat()},
        )

    async def maybe_reset(self) -> None:
        """Explicit reset check (the live runner's midnight task; every operation also checks)."""
        async with self._lock:
            self._check_reset()

    # ---------------------------------------------------------------- checks
    def _allowed(self) -> bool:
        if self._base <= 0 or self._daily_pnl >= 0:
            return True
        blocked = -self._daily_pnl / self._base >= self.max_daily_loss
        if blocked and self._limit_hit_day != self._day:
            self._limit_hit_day = self._day
            self._emit(
                "daily_loss_limit",
                f"daily loss limit reached: {self._daily_pnl:.4f} of base {self._base:.4f}",
                {"daily_pnl": self._daily_pnl, "base_balance": self._base},
            )
            if self._on_alert is not None:
                text = daily_loss_message(self._daily_pnl, self._base, self.max_daily_loss)
                self._on_alert("daily_loss", text)
        return not blocked

    async def trading_allowed(self) -> bool:
        """False when today's realised net loss reached 5 % of the base balance (entries only)."""
        async with self._lock:
            self._check_reset()
            return self._allowed()

    async def can_open(self, symbol: str, side: Side) -> RiskDecision:
        """Position rules of SPEC §9, in SPEC order: max open, symbol already open, same side."""
        async with self._lock:
            self._check_reset()
            return self._can_open(symbol, side)

    @contextlib.contextmanager
    def settling(self, symbol: str) -> Iterator[None]:
        """Mark ``symbol``'s close as in flight (sent or executed, not booked) for the block.

        Re-entrant per symbol (a close that books through the ledger nests the two)."""
        self._settling[symbol] = self._settling.get(symbol, 0) + 1
        try:
            yield
        finally:
            left = self._settling.pop(symbol) - 1
            if left:
                self._settling[symbol] = left
            self._settle_changed.set()

    async def _wait_settled(self) -> bool:
        """Wait until no close is in flight, at most ``SETTLE_WAIT_S`` on the injected clock per
        wait; False when one is still unbooked after it. The entering symbol's own close counts
        too: a reverse re-enters only once its close has released the symbol here."""
        while self._settling:
            self._settle_changed.clear()
            try:
                await self._clock.wait_for(self._settle_changed.wait(), SETTLE_WAIT_S)
            except TimeoutError:
                return not self._settling
        return True

    async def can_enter(self, symbol: str, side: Side) -> RiskDecision:
        """The entry gate, taken under ``entry_lock`` right before the order (issue 7 defect 13).

        The daily-loss limit and the position rules are read in one critical section: a loss
        booked by another bot between an earlier ``trading_allowed()`` and this call is seen
        here, so no bot enters on a day that has just hit the limit. A close that is in flight
        (``settling``, any symbol) is waited for first: its loss counts before this entry; still
        unbooked after ``SETTLE_WAIT_S`` → refused (fail closed).
        """
        if not await self._wait_settled():
            unbooked = sorted(self._settling)
            self._emit(
                "entry_refused_close_settling",
                f"{symbol}: entry refused, the close of {', '.join(unbooked)} is not booked yet",
                {"symbol": symbol, "settling": unbooked},
            )
            return REFUSED_CLOSE_SETTLING
        async with self._lock:
            self._check_reset()
            if not self._allowed():
                return REFUSED_DAILY_LOSS
            return self._can_open(symbol, side)

    def halt_entries(self) -> None:
        """SIGINT/SIGTERM (issue 10 §1: stop taking entries): every later entry is refused, the
        decisions already running included; exits, protection and bookings go on."""
        self._halted = True

    def _can_open(self, symbol: str, side: Side) -> RiskDecision:
        if self._halted:
            return REFUSED_STOPPING
        if len(self._open) >= self.max_positions:
            return REFUSED_MAX_POSITIONS
        if symbol in self._open:
            return REFUSED_SYMBOL_OPEN
        same = 0
        for s in self._open.values():
            if s is side:
                same += 1
        if same >= self.max_same_direction:
            return REFUSED_SAME_DIRECTION
        return OK

    # ---------------------------------------------------------------- mutations
    async def register(self, symbol: str, side: Side) -> None:
        """Record an open position. Unconditional: a filled order or an adopted position is real
        exposure whatever the limits say (the check happens before the order, in ``can_open``)."""
        async with self._lock:
            self._check_reset()
            self._open[symbol] = side

    async def close(self, symbol: str, pnl: float, *, time_ms: int | None = None) -> None:
        """Remove ``symbol`` (absent is fine) and add its realised net PnL to the day of
        ``time_ms`` (the fill time; default now), see ``_add_pnl``."""
        async with self._lock:
            self._check_reset()
            self._open.pop(symbol, None)
            self._add_pnl(pnl, time_ms)

    async def record_pnl(self, pnl: float, *, time_ms: int | None = None) -> None:
        """Add PnL without touching the registry: a close confirmed *after* its position was
        released on timeout must count, but must not remove the symbol's newer registration."""
        async with self._lock:
            self._check_reset()
            self._add_pnl(pnl, time_ms)

    def _add_pnl(self, pnl: float, time_ms: int | None) -> None:
        """A PnL belongs to the UTC day of its fill (issue 7 defect 16), as in the journal
        (``Journal.daily_pnl`` sums by exit time): a loss filled at 23:59:59.9 and handled after
        midnight is yesterday's and does not count against today's limit."""
        if time_ms is not None and time_ms // DAY_MS < self._day:
            self._emit(
                "pnl_previous_day",
                f"PnL {pnl:.4f} filled on {utc_day(time_ms).isoformat()} booked to that day, not today",
                {"pnl": pnl, "fill_time_ms": time_ms},
            )
            return
        if time_ms is not None and time_ms // DAY_MS == self._day + 1:
            # Filled after 00:00 UTC on the venue's clock while ours still reads the day before:
            # the new day starts now, else our own midnight reset would drop this PnL from it.
            self._start_day(time_ms // DAY_MS)
        self._daily_pnl += pnl

    # ---------------------------------------------------------------- sizing
    def margin_ratio(self, balance: float, num_symbols: int) -> float:
        """Like-for-like margin ratio (SPEC §9): per-symbol share against the per-symbol base."""
        n = max(1, num_symbols)
        return margin_ratio(balance / n, self._base / n, self._cfg)

    # ---------------------------------------------------------------- journal
    def _emit(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        log.info("risk: %s", message)
        if self._journal is not None:
            self._journal.record_event(self._clock.now_ms(), f"risk.{kind}", "", message, data)
