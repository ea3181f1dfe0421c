"""A restart while an entry's outcome is unknown (helper ``restartpend``): the dead process
journaled the entry's request (intent first), the venue executes it later. The new process must
know that entry again, so that its fills are adopted and protected at once, as the dead process
would have done, instead of waiting (unprotected) for the next reconcile pass or candle. And a
pending entry's answers that come back out of order.

Why a file of its own: ``test_bot_review.py`` is at its size limit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from perpbot.domain.types import Order, OrderResult, OrderSide, OrderStatus, OrderType, Position
from perpbot.engine.clock import SimClock
from perpbot.engine.journal import Journal
from perpbot.exchange.errors import NO_SUCH_ORDER, ExchangeError, ExchangeUnavailable

from .factories import SYM, T0, ctx_at, flat, order_update
from .harness import LONG, FakePort, World, fake_bot
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


class StaleAnswer(FakePort):
    """The entry call times out (its outcome unknown); a query by client id answered before the
    order existed may arrive after it filled (two requests in flight, answers in any order)."""

    entry_failed = False
    gate: asyncio.Event | None = None

    async def market_order(self, symbol: str, side: OrderSide, quantity: float, **kw: Any) -> OrderResult:
        if not self.entry_failed and not kw.get("reduce_only"):
            self.entry_failed = True
            self.calls.append("market_order")
            raise ExchangeUnavailable("timeout")
        return await super().market_order(symbol, side, quantity, **kw)

    async def get_order(self, symbol: str, *, order_id: int = 0, client_order_id: str = "") -> Order:
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
            raise ExchangeError(NO_SUCH_ORDER, "Order does not exist.")
        return await super().get_order(symbol, order_id=order_id, client_order_id=client_order_id)


async def test_a_stale_does_not_exist_never_releases_a_position_adopted_meanwhile() -> None:
    """A pending entry is queried (a reconcile pass); while the query is out, the order fills
    and the stream's fill adopts and protects the position. The older answer, "does not exist",
    then came back. Old code released the symbol in the risk manager anyway: a live position
    that the 3-position and 2-per-direction limits no longer counted."""
    clock = SimClock(T0)
    port = StaleAnswer()
    bot, risk, _journal, _notifier = fake_bot(port, clock)
    await bot.start()
    await bot.on_candle(ctx_at(0, 100.0, LONG))
    pending = bot._pending
    assert pending is not None and risk.open_positions == {SYM: LONG}
    gate = port.gate = asyncio.Event()
    query = asyncio.ensure_future(bot._resolve_pending())
    await asyncio.sleep(0)
    port.orders[1] = Order(
        SYM,
        1,
        OrderSide.BUY,
        OrderType.MARKET,
        10.0,
        OrderStatus.FILLED,
        False,
        10.0,
        100.0,
        pending.client_id,
    )
    port.pos = Position(SYM, LONG, 10.0, 100.0)
    fill = order_update(1, 1, qty=10.0, price=100.0, side=OrderSide.BUY, cid=pending.client_id, t=T0 + 5)
    await bot.on_event(fill)
    for _ in range(50):
        await asyncio.sleep(0)
    await bot.wait_background()
    assert bot.in_position and risk.open_positions == {SYM: LONG}
    gate.set()
    await query
    assert bot.in_position and risk.open_positions == {SYM: LONG}


class ReplyLost(FakePort):
    """The entry executes but its reply is lost (a timeout after execution): the bot asks for
    the order by client id and finds it filled."""

    async def market_order(self, symbol: str, side: OrderSide, quantity: float, **kw: Any) -> OrderResult:
        res = await super().market_order(symbol, side, quantity, **kw)
        if kw.get("reduce_only"):
            return res
        raise ExchangeUnavailable("-1007: Timeout waiting for response from backend server")


async def test_an_entry_found_by_client_id_after_a_lost_reply_has_its_answer_journaled() -> None:
    """The order found after the lost reply is journaled as any answer (status, order id), so
    that a restart knows which trade booked it. Old code left the ENTRY row at ERROR without an
    order id: a restart could only judge it by comparing two clocks."""
    clock = SimClock(T0)
    port = ReplyLost()
    bot, _risk, journal, _notifier = fake_bot(port, clock)
    await bot.start()
    await bot.on_candle(ctx_at(0, 100.0, LONG))
    assert bot.in_position
    (rec,) = journal.orders(SYM, "ENTRY")
    assert rec.order_id == 1 and rec.status == "FILLED" and rec.executed_qty == port.orders[1].executed_qty
