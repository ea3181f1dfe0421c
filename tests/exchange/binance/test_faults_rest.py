"""REST faults injected by ``perpbot simulate``: what the adapter does about each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from perpbot.domain.types import OrderSide, OrderStatus, OrderType
from perpbot.exchange.binance.budget import WeightBudget
from perpbot.exchange.errors import ExchangeError

Start = Callable[..., Any]


async def test_503_after_execution_adopts_the_order_instead_of_doubling_it(start_venue: Start) -> None:
    v = await start_venue()
    await v.inject({"kind": "unknown_after_execution", "endpoint": "/fapi/v1/order", "count": 1})
    r = await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="adopt-1")
    assert r.status is OrderStatus.FILLED and r.executed_qty == 100.0
    pos = await v.ex.position("XRPUSDT")
    assert pos is not None and pos.quantity == 100.0  # one position, not two
    state = await v.state()
    assert state["fill_count"] == 1
    assert [f["kind"] for f in state["faults"]] == ["unknown_after_execution"]
    assert state["faults"][0]["hits"] == 1


async def test_503_after_an_algo_placement_adopts_it(start_venue: Start) -> None:
    v = await start_venue()
    await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="algo-in")
    price = await v.price("XRPUSDT")
    await v.inject({"kind": "unknown_after_execution", "endpoint": "/fapi/v1/algoOrder", "count": 1})
    sl = await v.ex.place_conditional(
        "XRPUSDT",
        OrderType.STOP_MARKET,
        OrderSide.SELL,
        100.0,
        round(price * 0.9, 4),
        client_algo_id="algo-sl",
    )
    assert sl.client_algo_id == "algo-sl"
    assert [a.algo_id for a in await v.ex.open_conditional_orders("XRPUSDT")] == [sl.algo_id]


async def test_unknown_outcome_with_no_order_resends_the_same_client_id(start_venue: Start) -> None:
    v = await start_venue()
    await v.inject({"kind": "http_error", "status": 503, "endpoint": "/fapi/v1/order", "count": 1})
    r = await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="resend-1")
    assert r.status is OrderStatus.FILLED
    o = await v.ex.get_order("XRPUSDT", client_order_id="resend-1")
    assert o.order_id == r.order_id and (await v.state())["fill_count"] == 1


async def test_429_makes_every_adapter_of_the_process_wait(start_venue: Start) -> None:
    budget = WeightBudget()
    a = await start_venue(budget=budget)
    b = await start_venue(sim=a.sim, budget=budget)
    await a.inject({"kind": "rate_limit_burst", "count": 1})
    with pytest.raises(ExchangeError) as err:
        await a.ex.balance()  # refused, and not retried blindly
    assert err.value.code == -1003
    t0 = time.monotonic()
    assert await b.ex.balance() == pytest.approx(1000.0)  # the other adapter waited Retry-After
    assert time.monotonic() - t0 >= 0.9
    assert budget.waits >= 1
    assert (await a.state())["faults"][0]["hits"] == 1  # nothing reached the server meanwhile: no 418


async def test_minus_1021_resyncs_the_clock_and_retries_once(start_venue: Start) -> None:
    v = await start_venue()
    syncs = v.ex.rest.time_syncs
    await v.inject({"kind": "time_skew", "ms": 40_000, "seconds": 60})
    assert await v.ex.balance() == pytest.approx(1000.0)
    assert v.ex.rest.time_syncs == syncs + 1
    assert v.ex.rest.time_offset_ms == pytest.approx(-40_000, abs=1_000)
    r = await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="skew-1")
    assert r.status is OrderStatus.FILLED and v.ex.rest.time_syncs == syncs + 1


async def test_a_rejection_is_not_retried(start_venue: Start) -> None:
    v = await start_venue()
    await v.inject({"kind": "reject_orders", "code": -2019, "order_kind": "order", "count": 1})
    with pytest.raises(ExchangeError) as err:
        await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="rej-1")
    assert err.value.code == -2019
    assert await v.ex.position("XRPUSDT") is None


async def test_timed_out_request_that_executes_late_is_adopted_not_doubled(start_venue: Start) -> None:
    """The request is held 1 s on its way (within its 2 s recvWindow); the client gives up after
    0.3 s. The order is not there yet when first looked up: the adapter waits until the lost
    request can no longer execute, finds it, and adopts it instead of sending a second one."""
    v = await start_venue(timeout_ms=300, recv_window_ms=2_000)
    await v.inject({"kind": "latency", "ms": 1000, "endpoint": "/fapi/v1/order", "count": 1})
    r = await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="late-1")
    assert r.status is OrderStatus.FILLED and r.executed_qty == 100.0
    await asyncio.sleep(1.0)  # any request still on its way has landed by now
    pos = await v.ex.position("XRPUSDT")
    assert pos is not None and pos.quantity == 100.0
    assert (await v.state())["fill_count"] == 1
    assert v.ex._placer.adopted == 1 and v.ex._placer.resent == 0


async def test_a_request_that_waited_for_the_rate_limit_is_not_resent_before_it_expires(
    start_venue: Start,
) -> None:
    """The order waits 2 s in the process's 429 back-off before it is signed and sent; it is then
    held 2.7 s on its way (within its 3 s recvWindow) while the client gives up after 0.3 s. The
    lost request can execute until 3 s after it was *signed*, not after the call began: a resend
    made before then (under the same client id, which Binance accepts again once the first order
    is filled) would open the position twice."""
    budget = WeightBudget()
    v = await start_venue(budget=budget, timeout_ms=300, recv_window_ms=3_000)
    await v.inject({"kind": "latency", "ms": 2700, "endpoint": "/fapi/v1/order", "count": 1})
    budget.on_429(2.0)
    r = await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="waited-1")
    assert r.status is OrderStatus.FILLED and r.executed_qty == 100.0
    await asyncio.sleep(3.5)  # any request still on its way has landed (or expired) by now
    pos = await v.ex.position("XRPUSDT")
    assert pos is not None and pos.quantity == 100.0
    assert (await v.state())["fill_count"] == 1
    assert v.ex._placer.resent == 0
