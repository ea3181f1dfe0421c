"""Orders do not queue behind reads in the process-wide weight budget (real ccxt, real
simulator): a preload or a trade/income catch-up that spent the minute's read weight must not
delay a stop-loss, its cancel or an emergency close until the next minute."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from perpbot.domain.types import OrderSide, OrderType
from perpbot.exchange.binance.adapter import BinanceExchange
from perpbot.exchange.binance.budget import WeightBudget
from perpbot.exchange.port import PROTECTING, protecting
from tests.contract.harness import BinanceVenue

Start = Callable[..., Any]
# The budget counts calendar minutes. Its clock is pinned inside one (a minute's first second), so
# the read share spent below stays spent for the whole test, whatever the wall clock's second.
MINUTE_MS = 29_600_000 * 60_000 + 1_000


def full_budget() -> WeightBudget:
    return WeightBudget(limit=200, margin=0.8, now_ms=lambda: MINUTE_MS)  # reads may spend 160


async def test_stop_cancel_and_close_go_out_while_reads_have_spent_the_minute(start_venue: Start) -> None:
    v: BinanceVenue = await start_venue()
    budget = full_budget()
    ex = BinanceExchange(v.ex.endpoints, v.ex.rest._creds, budget=budget)
    try:
        await ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="prio-in")
        price = await v.price("XRPUSDT")
        while budget.used + 30 <= budget.capacity:
            await ex.income_history("XRPUSDT", 0)  # weight 30 each: a catch-up of income
        while budget.used < budget.capacity:
            await ex.open_orders("XRPUSDT")  # weight 1 each: fills the read share exactly
        waits = budget.waits

        async def protect_then_close() -> None:
            sl = await ex.place_conditional(
                "XRPUSDT", OrderType.STOP_MARKET, OrderSide.SELL, 100.0, round(price * 0.9, 4),
                client_algo_id="prio-sl",
            )  # fmt: skip
            await ex.cancel_conditional("XRPUSDT", sl.algo_id)
            await ex.market_order(
                "XRPUSDT", OrderSide.SELL, 100.0, reduce_only=True, client_order_id="prio-out"
            )

        await asyncio.wait_for(protect_then_close(), timeout=10.0)
        assert budget.waits == waits
        # Checked through the venue's own client: a read on the full budget would wait a minute.
        assert await v.ex.position("XRPUSDT") is None
    finally:
        await ex.close()


async def test_the_reads_of_a_protection_go_out_while_reads_have_spent_the_minute(start_venue: Start) -> None:
    """Re-placing a stop that disappeared starts with reads (the algo book, the position):
    inside ``protecting()`` they do not wait for the next minute either."""
    v: BinanceVenue = await start_venue()
    budget = full_budget()
    ex = BinanceExchange(v.ex.endpoints, v.ex.rest._creds, budget=budget)
    try:
        while budget.used + 30 <= budget.capacity:
            await ex.income_history("XRPUSDT", 0)
        while budget.used < budget.capacity:
            await ex.open_orders("XRPUSDT")
        waits = budget.waits

        async def reads() -> None:
            with protecting():
                await ex.open_conditional_orders("XRPUSDT")
                await ex.position("XRPUSDT")

        await asyncio.wait_for(reads(), timeout=10.0)
        assert budget.waits == waits
        assert not PROTECTING.get()  # the mark ends with the block
    finally:
        await ex.close()
