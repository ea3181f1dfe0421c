"""Binance refuses an 11th open conditional order of a symbol (-4045 "Reach max stop order
limit."). A book filled by the bot's own stale orders (undersized stops whose cancels failed,
duplicates of placements that timed out) must not turn a missing stop into an emergency close:
the bot cancels its stale orders and places the stop."""

from __future__ import annotations

import pytest

from perpbot.domain.client_ids import make_client_id
from perpbot.domain.types import OrderSide, OrderType
from perpbot.exchange.errors import MAX_STOP_ORDERS, ExchangeError
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
