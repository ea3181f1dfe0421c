"""A restart while an entry's outcome is unknown (helper ``restartpend``): the dead process
journaled the entry's request (intent first), the venue executes it later. The new process must
know that entry again, so that its fills are adopted and protected at once, as the dead process
would have done, instead of waiting (unprotected) for the next reconcile pass or candle.

Why a file of its own: ``test_bot_review.py`` is at its size limit."""

from __future__ import annotations

from pathlib import Path

from perpbot.engine.journal import Journal

from .factories import SYM, ctx_at, flat
from .harness import LONG, World
from .test_bot_hostile import covered
from .test_bot_review import LateOrder


async def test_an_entry_the_venue_executes_after_a_restart_is_protected_at_once(tmp_path: Path) -> None:
    """The entry's call timed out (Binance -1007) and the venue does not know the order yet; the
    process is killed; the venue executes the order after the restart. Old code forgot the
    entry at the flat start: its fills matched nothing, no SL/TP until a reconcile pass, which
    (no stop prices known for them) closed the position as an emergency."""
    w = World(flat(100, 6), journal=Journal(tmp_path / "journal.sqlite"), exchange_cls=LateOrder)
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.bot.state.side is None and w.risk.open_positions == {SYM: LONG}  # pending
    w.crash()
    w.bot = await w.restart(ctx_at(1, 100.0, None))
    await w.ex.drain()
    await w.ex.execute_late()
    await w.ex.drain()
    await w.bot.wait_background()
    pos = w.engine.position(SYM)
    assert pos is not None
    assert w.bot.state.side is LONG and w.bot.state.qty == pos.quantity
    assert covered(w) and w.risk.open_positions == {SYM: LONG}
    assert (w.bot.state.sl_price, w.bot.state.tp_price) == (96.0, 104.0)  # 2 ATR of the preload
    assert not w.bot._journal.orders(SYM, "EMERGENCY")
