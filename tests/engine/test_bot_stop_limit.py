"""Binance refuses an 11th open conditional order of a symbol (-4045 "Reach max stop order
limit."). A book filled by the bot's own stale orders (undersized stops whose cancels failed,
duplicates of placements that timed out) must not turn a missing stop into an emergency close:
the bot cancels its stale orders and places the stop."""

from __future__ import annotations

from typing import Any

import pytest

from perpbot.domain.client_ids import make_client_id
from perpbot.domain.types import ConditionalOrder, OrderSide, OrderType, Position
from perpbot.exchange.errors import MAX_STOP_ORDERS, ExchangeError
from perpbot.exchange.port import PROTECTING
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.engine import MAX_OPEN_ALGOS

from .factories import SYM, T0, flat
from .harness import LONG, World
from .test_bot_hostile import covered


def test_the_in_process_venue_refuses_an_eleventh_conditional_order() -> None:
    w = World(flat(100, 3))
    w.engine.process_bar(SYM, 0)
    w.engine.market_order(SYM, OrderSide.BUY, 10.0)
    for k in range(MAX_OPEN_ALGOS):
        w.engine.place_algo(SYM, OrderType.STOP_MARKET, OrderSide.SELL, 1.0, 90.0 - k)
    with pytest.raises(ExchangeError) as err:
        w.engine.place_algo(SYM, OrderType.STOP_MARKET, OrderSide.SELL, 1.0, 80.0)
    assert err.value.code == MAX_STOP_ORDERS


async def test_a_full_stop_book_of_own_stale_orders_is_cleared_not_an_emergency_close() -> None:
    w = World(flat(100, 6))
    await w.start()
    await w.run({1: LONG}, until=2)
    await w.bot.wait_background()
    assert covered(w)
    qty = w.bot.state.qty
    tp_id = w.bot.state.tp_id
    # The stop disappears; the book already holds the bot's own stale, undersized stops.
    w.engine.cancel_algo(SYM, w.bot.state.sl_id)
    stale = [
        w.engine.place_algo(
            SYM, OrderType.STOP_MARKET, OrderSide.SELL, round(qty / 2, 3), 90.0 - k,
            client_algo_id=make_client_id(SYM, T0, f"sl{k + 2}"),
        ).algo_id
        for k in range(MAX_OPEN_ALGOS - 1)
    ]  # fmt: skip
    w.engine.pop_events()
    await w.bot.reconcile()
    await w.bot.wait_background()
    assert not w.journal.events("emergency_close", SYM)
    assert w.bot.in_position and covered(w)
    open_ids = {o.algo_id for o in w.algo_orders()}
    assert tp_id in open_ids and not open_ids & set(stale)


class MarkingExchange(SimExchange):
    """The in-process venue, noting whether each request was marked ``protecting()`` (the mark
    the Binance adapter's weight budget gives priority to)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marks: list[tuple[str, bool]] = []

    async def open_conditional_orders(self, symbol: str) -> list[ConditionalOrder]:
        self.marks.append(("algo book", PROTECTING.get()))
        return await super().open_conditional_orders(symbol)

    async def position(self, symbol: str) -> Position | None:
        self.marks.append(("position", PROTECTING.get()))
        return await super().position(symbol)

    async def place_conditional(self, *args: Any, **kwargs: Any) -> ConditionalOrder:
        self.marks.append(("place", PROTECTING.get()))
        return await super().place_conditional(*args, **kwargs)


async def test_re_placing_a_lost_stop_marks_its_reads_as_protecting() -> None:
    """A stop that disappeared is re-placed after reading the algo book and the position:
    those reads must not wait behind a burst of history reads in the live weight budget."""
    w = World(flat(100, 6), exchange_cls=MarkingExchange)
    ex = w.ex
    assert isinstance(ex, MarkingExchange)
    await w.start()
    await w.run({1: LONG}, until=2)
    await w.bot.wait_background()
    w.engine.cancel_algo(SYM, w.bot.state.sl_id)
    w.engine.pop_events()
    ex.marks.clear()
    await w.bot.reconcile()
    await w.bot.wait_background()
    assert covered(w)
    first_place = ex.marks.index(("place", True))
    before = ex.marks[:first_place]
    last_algo_read = max(i for i, m in enumerate(before) if m[0] == "algo book")
    last_position_read = max(i for i, m in enumerate(before) if m[0] == "position")
    assert before[last_algo_read][1] and before[last_position_read][1]
    assert not PROTECTING.get()
