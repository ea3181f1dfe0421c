"""``userTrades`` as Binance answers it: a ``startTime`` alone covers the 7 days from it, and
nothing later (documented: "The time between startTime and endTime cannot be longer than 7 days";
observed: ccxt issues 14513 and 21103, an old ``since`` returns an empty list though the account
traded since). The simulator itself returns everything after ``startTime``; here its route is
wrapped with that window, shortened to one 15-minute bar (``SPAN_MS``) so that the simulator's
few days of replay can hold executions further apart than it: nothing in the adapter depends on
the length, so what passes here also holds against Binance's 7 days."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import OrderSide
from perpbot.exchange.binance.ws import StreamSettings
from perpbot.simulator import rest_account, server
from tests.contract.harness import BinanceVenue, InProcessSimulator

SPAN_MS = 15 * 60_000  # Binance: 7 days


def _binance_window(srv: Any, p: Any) -> Any:
    rows = rest_account.user_trades(srv, p)
    start, end = p.opt_int("startTime"), p.opt_int("endTime")
    if start is not None and end is None:
        rows = [r for r in rows if int(r["time"]) < start + SPAN_MS]
    return rows


@pytest.fixture
async def venue(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    routes = [
        (m, p, _binance_window if p == "/fapi/v1/userTrades" else h, sec) for m, p, h, sec in server.ROUTES
    ]
    monkeypatch.setattr(server, "ROUTES", routes)
    made: list[tuple[InProcessSimulator, BinanceVenue]] = []

    async def start(**kw: Any) -> BinanceVenue:
        sim = await InProcessSimulator().start()
        v = BinanceVenue(sim, **kw)  # type: ignore[arg-type]
        made.append((sim, v))
        await v.start()
        return v

    yield start
    for sim, v in made:
        await v.close()
        await sim.stop()


async def test_trades_since_more_than_a_span_ago_include_the_recent_ones(venue: Any) -> None:
    """A position held longer than the span: its entry fill and its close, two bars apart."""
    v: BinanceVenue = await venue()
    entry = await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="span-in")
    await v.advance(2)
    close = await v.ex.market_order(
        "XRPUSDT", OrderSide.SELL, 100.0, reduce_only=True, client_order_id="span-out"
    )
    first = (await v.ex.get_order("XRPUSDT", order_id=entry.order_id)).time_ms
    both = [entry.order_id, close.order_id]
    assert [f.order_id for f in await v.ex.user_trades("XRPUSDT", first)] == both
    # a start with no execution in the span after it (an account quiet for a week)
    assert [f.order_id for f in await v.ex.user_trades("XRPUSDT", first - 2 * SPAN_MS)] == both
    assert [f.order_id for f in await v.ex.user_trades("XRPUSDT", first + 1)] == [close.order_id]


async def test_an_execution_missed_while_deaf_is_recovered_on_an_account_without_recent_trades(
    venue: Any,
) -> None:
    """Start-up on an account with no trade in the last 7 days (a new deployment): the first
    execution happens while the user stream is down; the resync after reconnecting must still
    find it (it asked for the trades since 1970, i.e. the first week of 1970)."""
    v: BinanceVenue = await venue(stream=StreamSettings(silence_s=600.0, backoff_s=0.5, backoff_max_s=0.5))
    us = v.ex.user_stream
    assert us is not None
    await v.inject({"kind": "drop_connection", "stream": "private"})
    r = await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="deaf-new")  # while deaf
    deadline = time.monotonic() + 8.0
    while us.socket.connects < 2 or not us.socket.connected.is_set():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await v.settle()
    trades = [e for e in v.events if isinstance(e, OrderTradeUpdate) and e.execution_type == "TRADE"]
    assert [e.order_id for e in trades] == [r.order_id]
