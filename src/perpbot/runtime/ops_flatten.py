"""``perpbot flatten``: close a symbol's position now (reduce-only MARKET), then empty both of its
order books (regular and algo), booking the close through the bots' own ledger and risk rules.

Design choice: one booker per journal. While a ``perpbot run`` owns the journal, this module
does nothing itself: the command hands the request to the running bot through the journal
(``ops_desk``), because the running process owns the journal's row ids, would see the close's
fills on its user stream and book the trade a second time (or SYNC-close it), and must not race
its own candle handling. Without a run, the command is the booker: it takes the journal's lock
for its whole duration (so no run can start half-way) and does what follows.

How the close is booked: the command builds the same ``SymbolBot`` the runtime runs, over the
live adapter with its user stream, a ``RiskManager`` restored from the journal and the journal
itself. ``start()`` adopts the position exactly as a restart would (journaled entry, executions
accounted, protection found), and ``close_position(MANUAL)`` closes it with the bot's confirmed
close: the trade is journaled once, today's PnL and the kill switch see it, and the bot cancels
its own protective orders. Only when the exchange then shows the symbol flat are both books
cancelled wholesale (anything left, ours or not); a close that is not confirmed leaves every
protective order in place and is reported (never a position without its stop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perpbot.config import AppConfig
from perpbot.domain.types import ClosedTrade, CloseReason
from perpbot.engine.clock import Clock, LiveClock
from perpbot.engine.notifier import RecordingNotifier
from perpbot.errors import ConfigError
from perpbot.runtime.guard import JournalLock, check_journal_format
from perpbot.runtime.ops_journal import lock_holder, open_read_only


@dataclass(frozen=True, slots=True)
class FlattenResult:
    symbol: str
    had_position: bool
    closed: bool  # the close was confirmed by the exchange and booked
    trades: tuple[ClosedTrade, ...]  # booked by this command (normally one)
    cancelled: int  # orders left in the two books and cancelled after the close
    still_open: bool  # the exchange still shows a position (protection left in place)

    def line(self) -> str:
        if self.still_open:
            return (
                f"{self.symbol}: close NOT confirmed; the position is still open and keeps its "
                "protective orders (check perpbot status, retry)"
            )
        booked = "; ".join(booked_line(t) for t in self.trades)
        head = f"{self.symbol}: {'closed' if self.had_position else 'already flat'}"
        return f"{head}{'; ' + booked if booked else ''}; {self.cancelled} resting order(s) cancelled"


def booked_line(t: ClosedTrade) -> str:
    what = f"{t.side.value} {t.quantity:g} {t.reason.value}"
    return f"booked {what} exit {t.exit_price:.6g} net {t.net_pnl:+.4f}"


def refuse_if_running(journal: Path) -> None:
    """Between the command's check and its own lock a run may have started: refuse then."""
    holder = lock_holder(journal)
    if holder is not None:
        raise ConfigError(
            f"{journal}: a perpbot run ({holder}) took this journal meanwhile; flatten again (the "
            "request then goes to the running bot)"
        )


async def flatten(
    cfg: AppConfig,
    journal_path: Path,
    symbols: list[str],
    *,
    connect: Callable[..., Awaitable[tuple[Any, float]]],
    clock: Clock | None = None,
    out: Callable[[str], None] = print,
) -> list[FlattenResult]:
    """Flatten ``symbols`` one after another (see the module docstring)."""
    from perpbot.engine.journal import Journal
    from perpbot.engine.risk import RiskManager

    open_read_only(journal_path).close()  # exists, is a journal, not from a newer perpbot
    refuse_if_running(journal_path)
    lock = JournalLock(journal_path).acquire()
    try:
        check_journal_format(journal_path)
        clock = clock or LiveClock()
        journal = Journal(journal_path)
        exchange = None
        try:
            risk = RiskManager(cfg, clock, journal=journal)
            risk.restore_from_journal(journal)
            exchange, _balance = await connect(cfg, attempts=2)
            await exchange.start_user_stream(list(symbols))
            notifier = RecordingNotifier()
            results = [await _flatten_one(cfg, s, exchange, risk, journal, clock, notifier) for s in symbols]
            for _kind, text in notifier.messages:
                out("  alert: " + " ".join(text.split()))
            return results
        finally:
            if exchange is not None:
                await exchange.close()
            journal.close()
    finally:
        lock.release()


async def _flatten_one(
    cfg: AppConfig, symbol: str, exchange: Any, risk: Any, journal: Any, clock: Clock, notifier: Any
) -> FlattenResult:
    from perpbot.engine.bot import SymbolBot
    from perpbot.ml.decision import PassThroughFilter

    bot = SymbolBot(
        symbol,
        cfg,
        exchange,
        risk,
        PassThroughFilter(),
        journal,
        clock,
        notifier,
        num_symbols=len(cfg.symbols),
    )
    try:
        journal.record_event(clock.now_ms(), "operator.flatten", symbol, "perpbot flatten requested")
        had = await exchange.position(symbol) is not None
        await bot.start(None)  # adopt (or clean up a flat symbol) exactly as a restart would
        if bot.in_position:  # (an adoption without any usable stop has closed it already)
            await bot.close_position(CloseReason.MANUAL)
        await bot.wait_background()
        still_open = await exchange.position(symbol) is not None
        cancelled = 0
        if not still_open:
            cancelled = await cancel_both_books(exchange, symbol)
        trades = tuple(bot.closed_trades)
        journal.record_event(
            clock.now_ms(),
            "operator.flatten_done",
            symbol,
            f"flatten: {'still open' if still_open else 'flat'}, {len(trades)} trade(s) booked",
            {"trades": len(trades), "cancelled": cancelled, "still_open": still_open},
        )
        return FlattenResult(symbol, had, had and not still_open, trades, cancelled, still_open)
    finally:
        await bot.stop()


async def cancel_both_books(exchange: Any, symbol: str) -> int:
    """Cancel every resting order of a flat symbol in the regular and the algo book."""
    normal = await exchange.open_orders(symbol)
    algo = await exchange.open_conditional_orders(symbol)
    if normal:
        await exchange.cancel_all_orders(symbol)
    if algo:
        await exchange.cancel_all_conditional(symbol)
    for _ in range(20):  # the books answer at once on Binance; bounded wait for a slow venue
        if not await exchange.open_orders(symbol) and not await exchange.open_conditional_orders(symbol):
            break
        await asyncio.sleep(0.1)
    return len(normal) + len(algo)
