"""Defects found by the engine safety review (helper ``revengine``), each with the scenario that
showed it on the simulated exchange.

Why a file of its own: the behaviour files it would belong to are already past their size."""

from __future__ import annotations

from perpbot.exchange.sim.faults import FaultPlan, OrderScript

from .factories import SYM, flat
from .harness import LONG, World
from .test_bot_hostile import ByIntent, covered


async def test_a_signal_while_an_entry_is_pending_sends_no_second_entry() -> None:
    """The entry is acknowledged and still open at the next candle's signal. Old code took the
    pending entry's registration for a stale one: released it, sent a second entry and forgot
    the first, whose late fill then opened a position that nobody tracked or protected (until
    reconcile adopted it and, with no stop prices known, closed it as an emergency)."""
    plan = FaultPlan(orders=ByIntent({"entry": OrderScript(ack=True, fill_delay_s=1500.0)}))
    w = World(flat(100, 6), faults=plan)
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.bot.state.side is None and w.risk.open_positions == {SYM: LONG}  # pending
    await w.bot.reconcile()  # still open: kept pending
    await w.run({2: LONG}, until=2)  # a new signal while it is pending
    assert len(w.journal.orders(SYM, "ENTRY")) == 1  # no second entry
    assert w.risk.open_positions == {SYM: LONG}  # still registered
    await w.run({}, until=4)  # the first entry fills
    await w.bot.wait_background()
    pos = w.engine.position(SYM)
    assert pos is not None and w.bot.state.side is LONG and w.bot.state.qty == pos.quantity
    assert covered(w) and w.risk.open_positions == {SYM: LONG}
    assert not w.journal.orders(SYM, "EMERGENCY")
