"""Request weights: the used-weight header on every answer, order counts on orders, 429 with
Retry-After and -1003 over 2400/min, then 418 for a client that keeps sending."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from perpbot.simulator.errors import BinanceError
from perpbot.simulator.weights import RateLimiter, request_weight
from tests.simulator.conftest import signed_query


class FakeClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_binance_weights_by_endpoint_and_parameters() -> None:
    assert request_weight("GET", "/fapi/v1/klines", {"limit": "99"}) == 1
    assert request_weight("GET", "/fapi/v1/klines", {}) == 5
    assert request_weight("GET", "/fapi/v1/klines", {"limit": "1500"}) == 10
    assert request_weight("GET", "/fapi/v1/openOrders", {"symbol": "XRPUSDT"}) == 1
    assert request_weight("GET", "/fapi/v1/openOrders", {}) == 40
    assert request_weight("GET", "/fapi/v1/income", {}) == 30
    assert request_weight("GET", "/fapi/v3/account", {}) == 5


def test_window_resets_at_the_minute_boundary() -> None:
    clock = FakeClock(60_000 * 1000 + 59_000)
    rl = RateLimiter(clock, weight_limit=10)
    rl.admit(10, False)
    clock.ms += 1000  # next calendar minute
    rl.admit(10, False)
    assert rl.used == 10


async def test_429_then_418_over_the_limit(start_sim: Any) -> None:
    clock = FakeClock(1_800_000_000_000 + 5_000)  # 5 s into a minute
    srv = await start_sim(wall_ms=clock)
    h = {"X-MBX-APIKEY": srv.cfg.api_key}
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{srv.port}") as http:
        for n in range(80):  # income weighs 30: 80 × 30 = 2400, the whole budget
            async with http.get(f"/fapi/v1/income?{signed_query(srv, {})}", headers=h) as r:
                assert r.status == 200
                assert r.headers["X-MBX-USED-WEIGHT-1M"] == str(30 * (n + 1))
        async with http.get("/fapi/v1/time") as r:
            assert r.status == 429 and r.headers["Retry-After"] == "55"
            assert (await r.json())["code"] == -1003
        async with http.get("/fapi/v1/time") as r:
            assert r.status == 418 and int(r.headers["Retry-After"]) == 120
            assert (await r.json())["code"] == -1003
        clock.ms += 121_000  # ban over, new minute
        async with http.get("/fapi/v1/time") as r:
            assert r.status == 200 and r.headers["X-MBX-USED-WEIGHT-1M"] == "1"


async def test_order_counts_on_order_answers(start_sim: Any) -> None:
    srv = await start_sim(wall_ms=FakeClock(1_800_000_000_000 + 1_000))
    h = {"X-MBX-APIKEY": srv.cfg.api_key}
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{srv.port}") as http:
        for n in (1, 2):
            q = signed_query(srv, {"symbol": "XRPUSDT", "side": "BUY", "type": "MARKET", "quantity": "10"})
            async with http.post(f"/fapi/v1/order?{q}", headers=h) as r:
                assert r.status == 200
                assert r.headers["X-MBX-ORDER-COUNT-10S"] == str(n)
                assert r.headers["X-MBX-ORDER-COUNT-1M"] == str(n)
        async with http.get("/fapi/v1/time") as r:
            assert "X-MBX-ORDER-COUNT-1M" not in r.headers and "X-MBX-USED-WEIGHT-1M" in r.headers


def test_order_rate_limit_is_429_with_1015() -> None:
    clock = FakeClock(1_800_000_000_000)
    rl = RateLimiter(clock, orders_10s_limit=2)
    rl.admit(0, True)
    rl.admit(0, True)
    with pytest.raises(BinanceError) as err:
        rl.admit(0, True)
    assert (err.value.status, err.value.code, err.value.headers["Retry-After"]) == (429, -1015, "10")
    clock.ms += 10_000
    rl.admit(0, True)
    assert (
        rl.headers(True)["X-MBX-ORDER-COUNT-10S"] == "1" and rl.headers(True)["X-MBX-ORDER-COUNT-1M"] == "3"
    )
