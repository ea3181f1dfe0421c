"""``engine.catchup``: late amendments of booked trades (funding rows income history shows late,
an entry fee ``userTrades`` could not give at booking), in the process that booked the trade and
in one restarted on its journal.

Binance charges a funding settlement on the quantity open at its stamp; a trade owns the rows
stamped in ``[entry, exit)``. A row stamped exactly at a trade's exit belongs to the position
open at that instant (a reverse's new one), never to the exiting trade.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from perpbot.domain.client_ids import make_client_id
from perpbot.domain.types import CloseReason, Income, OrderSide, Side
from perpbot.engine.journal import Journal
from perpbot.engine.risk import RiskManager
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.faults import CallFault, Delivery, EventFate, EventRule, FaultPlan

from .factories import BAR, SL_BAR, SYM, T0, flat
from .harness import World

N = 40
RATE = 0.001
DELAY = FaultPlan(seed=7, income_delay_s=(120.0, 120.0))  # rows visible 2 minutes after booking
FAILED_READS = 6  # userTrades: the entry's bookkeeping read (3 attempts) and the close's


class ExtraRowAtExit(SimExchange):
    """Income history that also shows one FUNDING_FEE row stamped at ``stamp`` (set by the test)."""

    stamp = 0

    async def income_history(
        self, symbol: str, start_ms: int, income_types: tuple[str, ...] = ()
    ) -> list[Income]:
        rows = await super().income_history(symbol, start_ms, income_types)
        if self.stamp and (not income_types or "FUNDING_FEE" in income_types):
            rows.append(Income(SYM, "FUNDING_FEE", -5.0, self.stamp, f"funding-{self.stamp}"))
        return rows


async def _long_across_0800_closed_just_after(w: World) -> None:
    """Long from 00:30, across the 08:00 settlement (bar 32), closed at 08:15 before its row shows."""
    await w.start()
    await w.run({1: Side.LONG}, until=32)
    await w.bot.close_position(CloseReason.END_OF_DATA)
    await w.ex.drain()
    assert w.bot.closed_trades[0].funding == 0.0  # the row is not visible yet at booking


async def _reconcile_later(w: World) -> None:
    w.clock.set(int(w.t[33]) + 10 * 60_000)
    await w.bot.reconcile()
    await w.ex.drain()


async def test_a_funding_row_shown_after_booking_is_added_to_its_trade() -> None:
    w = World(flat(100.0, N), funding=[RATE] * N, faults=DELAY)
    await _long_across_0800_closed_just_after(w)
    await _reconcile_later(w)
    rows = w.engine.income_history(SYM, income_types=("FUNDING_FEE",))
    assert [r.time_ms for r in rows] == [int(w.t[32])]
    trade = w.bot.closed_trades[0]
    assert trade.funding == rows[0].income < 0  # a long pays a positive rate
    assert w.journal.closed_trades()[0].funding == trade.funding
    assert w.engine.balance() == 1000.0 + trade.net_pnl
    # The day's loss and the kill switch's window see the amended trade, as a restart would.
    assert w.risk.daily_pnl == pytest.approx(trade.net_pnl)
    assert [p for _id, p in w.bot.kill_switch._pnls] == [trade.net_pnl]


async def test_a_row_stamped_at_the_exit_is_not_the_exiting_trades() -> None:
    w = World(flat(100.0, N), funding=[RATE] * N, faults=DELAY, exchange_cls=ExtraRowAtExit)
    await _long_across_0800_closed_just_after(w)
    trade = w.bot.closed_trades[0]
    assert isinstance(w.ex, ExtraRowAtExit)
    w.ex.stamp = trade.exit_time_ms
    await _reconcile_later(w)
    real = w.engine.income_history(SYM, income_types=("FUNDING_FEE",))
    assert w.bot.closed_trades[0].funding == sum(r.income for r in real)


async def test_a_late_funding_row_is_added_by_the_process_restarted_after_the_booking(tmp_path: Path) -> None:
    """The process that booked the trade died before its funding row showed. Its watch lived in
    its memory and nothing looked again: the journal's trade kept funding 0 for good, off the
    venue's wallet by the row. A restarted bot watches the trades booked in the last day again
    and adds the row once (a second pass adds nothing)."""
    w = World(flat(100.0, N), funding=[RATE] * N, faults=DELAY, journal=Journal(tmp_path / "j.sqlite"))
    await _long_across_0800_closed_just_after(w)
    w.crash()
    bot = await w.restart(None)
    for _ in range(2):
        w.clock.set(int(w.t[33]) + 10 * 60_000)
        await bot.reconcile()
        await w.ex.drain()
    (row,) = w.engine.income_history(SYM, income_types=("FUNDING_FEE",))
    (trade,) = bot._journal.closed_trades()
    assert trade.funding == row.income < 0
    assert w.engine.balance() == pytest.approx(1000.0 + trade.net_pnl)
    assert len(bot._journal.events("late_funding")) == 1
    assert bot.at_rest is False and bot.watching_funding_only  # still watched, for the day


async def test_an_entry_fee_unknown_at_booking_is_added_by_the_restarted_process(tmp_path: Path) -> None:
    """The entry's execution report never came and ``userTrades`` failed through the entry's
    bookkeeping read: the stop-loss trade was booked without its entry fee, to be added once
    ``userTrades`` answers. The process died first: old code lost that watch with it. The
    restarted bot finds the trade's entry executions missing from the journal, reads them,
    journals them, and adds the fee once."""
    entry_cid = make_client_id(SYM, T0 + 2 * BAR, "entry")
    plan = FaultPlan(
        events=(EventRule(EventFate(Delivery.DROP), client_id=entry_cid, execution_type="TRADE"),),
        calls={("user_trades", k): CallFault(timeout=True) for k in range(FAILED_READS)},
    )
    w = World([*flat(100, 3), SL_BAR, *flat(97, 3)], faults=plan, journal=Journal(tmp_path / "j.sqlite"))
    await w.start()
    await w.run({1: Side.LONG}, until=4)
    await w.bot.wait_background()
    (booked,) = w.bot.closed_trades
    assert booked.reason is CloseReason.SL and booked.entry_fee == 0.0  # unknown at booking
    w.crash()
    bot = await w.restart(None)
    for _ in range(2):
        await bot.reconcile()
        await w.ex.drain()
    (entry_fill,) = [f for f in w.engine.fills(SYM) if f.side is OrderSide.BUY]
    (trade,) = bot._journal.closed_trades()
    assert trade.entry_fee == pytest.approx(entry_fill.commission) and trade.entry_fee > 0
    assert w.engine.balance() == pytest.approx(1000.0 + trade.net_pnl)
    assert [f[1] for f in bot._journal.fills_of_order(SYM, entry_fill.order_id)] == [entry_fill.trade_id]
    assert len(bot._journal.events("late_entry_fee")) == 1


async def test_a_late_fee_and_a_later_funding_row_both_stay_in_the_trade() -> None:
    """The entry fee is added by the first pass, the funding row (shown later) by a later one.
    Old code amended the funding from its watch's own copy of the trade, taken at booking: the
    journal's net PnL lost the fee added in between."""
    entry_cid = make_client_id(SYM, T0 + 2 * BAR, "entry")
    plan = FaultPlan(
        seed=7,
        income_delay_s=(120.0, 120.0),
        events=(EventRule(EventFate(Delivery.DROP), client_id=entry_cid, execution_type="TRADE"),),
        calls={("user_trades", k): CallFault(timeout=True) for k in range(FAILED_READS)},
    )
    w = World(flat(100.0, N), funding=[RATE] * N, faults=plan)
    await _long_across_0800_closed_just_after(w)
    assert w.bot.closed_trades[0].entry_fee == 0.0
    await w.bot.reconcile()  # userTrades answers; the funding row is not shown yet
    await w.ex.drain()
    assert w.bot.closed_trades[0].entry_fee > 0 and w.bot.closed_trades[0].funding == 0.0
    await _reconcile_later(w)
    trade = w.bot.closed_trades[0]
    assert trade.entry_fee > 0 and trade.funding < 0
    assert w.journal.closed_trades()[0] == trade
    day = datetime.fromtimestamp(trade.exit_time_ms / 1000, UTC).date()
    assert w.journal.daily_pnl(day) == pytest.approx(trade.net_pnl)  # the stored net PnL column
    assert w.engine.balance() == pytest.approx(1000.0 + trade.net_pnl)


async def test_a_round_trip_booked_by_the_restart_is_watched_once(tmp_path: Path) -> None:
    """The stop-loss fired while no process listened: the restart books the round trip itself
    (and watches it, as any booking); watching again what the journal holds must not add it a
    second time."""
    w = World([*flat(100, 3), SL_BAR, *flat(97, 3)], journal=Journal(tmp_path / "j.sqlite"))
    await w.start()
    await w.run({1: Side.LONG}, until=2)
    w.i += 1
    w.clock.set(int(w.t[3]) + BAR)
    w.ex.process_bar(SYM, 3)  # the stop fires; the process dies before hearing of it
    w.crash()
    w.clock.set(int(w.t[4]) + BAR)
    bot = await w.restart(None)
    (trade,) = bot._journal.closed_trades()
    assert trade.reason is CloseReason.SL and trade.exit_time_ms >= T0 + 3600_000  # reaches 01:00
    watched = [wt[0] for wt in bot._funding_watch]
    assert len(watched) == 1 and len(set(watched)) == 1


class BookingMeanwhile(RiskManager):
    """A risk manager whose ``record_pnl`` lets something else run first (``meanwhile``): the
    stream booking another trade while a late amendment waits for the risk lock."""

    meanwhile: Callable[[], None] | None = None

    async def record_pnl(self, pnl: float, *, time_ms: int | None = None) -> None:
        if self.meanwhile is not None:
            self.meanwhile()
        await asyncio.sleep(0)
        await super().record_pnl(pnl, time_ms=time_ms)


async def test_a_booking_while_a_late_funding_row_is_added_does_not_break_the_pass() -> None:
    """The pass iterated the watches while it awaited the risk manager; a trade booked meanwhile
    (a new watch) ended it with "deque mutated during iteration", logged as a failed pass."""
    w = World(flat(100.0, N), funding=[RATE] * N, faults=DELAY, risk_cls=BookingMeanwhile)
    await _long_across_0800_closed_just_after(w)
    assert isinstance(w.risk, BookingMeanwhile)
    w.risk.meanwhile = lambda: w.bot._funding_watch.append(w.bot._funding_watch[0])
    await _reconcile_later(w)
    assert w.bot.errors == 0
    assert w.bot.closed_trades[0].funding < 0
