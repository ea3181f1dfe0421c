"""``engine.catchup``: late amendments of booked trades (funding rows income history shows late).

Binance charges a funding settlement on the quantity open at its stamp; a trade owns the rows
stamped in ``[entry, exit)``. A row stamped exactly at a trade's exit belongs to the position
open at that instant (a reverse's new one), never to the exiting trade.
"""

from __future__ import annotations

from perpbot.domain.types import CloseReason, Income, Side
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.faults import FaultPlan

from .factories import SYM, flat
from .harness import World

N = 40
RATE = 0.001
DELAY = FaultPlan(seed=7, income_delay_s=(120.0, 120.0))  # rows visible 2 minutes after booking


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


async def test_a_row_stamped_at_the_exit_is_not_the_exiting_trades() -> None:
    w = World(flat(100.0, N), funding=[RATE] * N, faults=DELAY, exchange_cls=ExtraRowAtExit)
    await _long_across_0800_closed_just_after(w)
    trade = w.bot.closed_trades[0]
    assert isinstance(w.ex, ExtraRowAtExit)
    w.ex.stamp = trade.exit_time_ms
    await _reconcile_later(w)
    real = w.engine.income_history(SYM, income_types=("FUNDING_FEE",))
    assert w.bot.closed_trades[0].funding == sum(r.income for r in real)
