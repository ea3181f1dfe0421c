"""A reverse (SPEC §8.6) cancels the closed position's stop-loss and take-profit before its
re-entry: both cancels are in flight together, so the re-entry waits one round trip for them,
not two."""

from __future__ import annotations

import asyncio

from perpbot.exchange.sim.adapter import SimExchange

from .factories import flat
from .harness import LONG, SHORT, World
from .test_bot_hostile import covered


class SlowCancels(SimExchange):
    """Each cancel takes a few event-loop turns (a network round trip); counts how many overlap."""

    in_flight = 0
    most = 0

    async def cancel_conditional(self, symbol: str, algo_id: int) -> None:
        cls = type(self)
        cls.in_flight += 1
        cls.most = max(cls.most, cls.in_flight)
        try:
            for _ in range(5):
                await asyncio.sleep(0)
            await super().cancel_conditional(symbol, algo_id)
        finally:
            cls.in_flight -= 1


async def test_a_reverse_cancels_both_stop_orders_at_once() -> None:
    SlowCancels.most = 0
    w = World(flat(100, 4), exchange_cls=SlowCancels, base=100_000.0)
    await w.start()
    await w.run({1: LONG, 2: SHORT}, until=2)
    await w.bot.wait_background()
    assert [t.reason.value for t in w.bot.closed_trades] == ["REVERSE"]
    assert SlowCancels.most == 2
    assert w.bot.state.side is SHORT and covered(w)
    assert len(w.algo_orders()) == 2  # the new position's SL and TP only
