"""``SymbolBot.at_rest``: the bot's side of the backtest skip-ahead (issue 13). At rest means
that ``reconcile()`` on a quiet book changes nothing, so the backtest may leave it out."""

from __future__ import annotations

from perpbot.domain.types import CloseReason, Side
from perpbot.engine.catchup import FUNDING_WATCH_MS

from .factories import SYM, flat
from .harness import World


async def test_at_rest_only_when_flat_and_nothing_in_flight() -> None:
    w = World(flat(100.0, 8))
    await w.start()
    await w.bot.reconcile()  # the first flat pass checks for orphans
    await w.ex.drain()
    assert w.bot.at_rest and w.engine.quiet(SYM)
    await w.run({1: Side.LONG}, until=3)
    assert w.bot.in_position and not w.bot.at_rest and not w.engine.quiet(SYM)
    await w.bot.close_position(CloseReason.MANUAL)
    await w.ex.drain()
    assert not w.bot.in_position and w.engine.quiet(SYM)
    assert not w.bot.at_rest  # its orders may still need the orphan check of the next pass


async def test_reconcile_of_a_bot_at_rest_changes_nothing() -> None:
    w = World(flat(100.0, 4))
    await w.start()
    await w.bot.reconcile()
    await w.ex.drain()
    assert w.bot.at_rest
    w.journal.flush()
    before = (w.journal.orders(), w.journal.events(), w.journal.closed_trades(), w.journal.fill_count())
    await w.bot.reconcile()
    assert not w.engine.has_events  # no order, cancel or account change on the exchange
    assert w.bot.at_rest and not w.bot.in_position
    w.journal.flush()
    after = (w.journal.orders(), w.journal.events(), w.journal.closed_trades(), w.journal.fill_count())
    assert after == before  # and nothing journaled


async def test_a_booked_trade_leaves_the_bot_watching_funding_only_and_its_passes_change_nothing() -> None:
    w = World(flat(100.0, 8))
    await w.start()
    await w.run({1: Side.LONG}, until=3)
    assert not w.bot.watching_funding_only  # in a position
    await w.bot.close_position(CloseReason.MANUAL)
    await w.ex.drain()
    await w.bot.reconcile()  # the orphan check after the close
    await w.ex.drain()
    assert w.engine.quiet(SYM) and not w.bot.busy
    # Not at rest (the day-long watch for late funding rows), but watching only.
    assert w.bot.watching_funding_only and not w.bot.at_rest
    w.journal.flush()
    key = (w.engine.income_count(SYM), len(w.bot.closed_trades))
    before = (w.journal.orders(), w.journal.events(), w.journal.closed_trades(), w.bot.closed_trades)
    await w.bot.reconcile()  # no new income row, no new trade: the pass is a no-op
    assert not w.engine.has_events and w.bot.watching_funding_only
    w.journal.flush()
    after = (w.journal.orders(), w.journal.events(), w.journal.closed_trades(), w.bot.closed_trades)
    assert after == before and key == (w.engine.income_count(SYM), len(w.bot.closed_trades))
    # Once the watch expired, a pass drops it: at rest.
    w.clock.set(w.clock.now_ms() + FUNDING_WATCH_MS + 1)
    await w.bot.reconcile()
    assert w.bot.at_rest and not w.bot.watching_funding_only
