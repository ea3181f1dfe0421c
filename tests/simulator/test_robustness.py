"""No request makes the server answer a traceback: every route, fed garbage in every parameter it
reads, answers Binance's JSON (success or a coded error), never HTTP 500."""

from __future__ import annotations

import aiohttp
import pytest

from perpbot.simulator.server import ROUTES, SimServer
from tests.simulator.conftest import signed_query

PARAMS = [
    *("symbol", "side", "type", "quantity", "triggerPrice", "orderId", "origClientOrderId", "algoId"),
    *("clientAlgoId", "leverage", "marginType", "dualSidePosition", "limit", "startTime", "endTime"),
    *("interval", "period", "incomeType", "fromId", "page", "closePosition", "reduceOnly"),
    *("newOrderRespType", "algoType", "positionSide", "newClientOrderId"),
]
GARBAGE = ["", "abc", "-1", "0", "1e309", "NaN", "99999999999999999999999", "x" * 40, "ß☃", "1.5"]


@pytest.mark.parametrize("value", GARBAGE)
async def test_every_route_survives_garbage(sim: SimServer, http: aiohttp.ClientSession, value: str) -> None:
    h = {"X-MBX-APIKEY": sim.cfg.api_key}
    for method, path, _, _ in ROUTES:
        for symbol in ("XRPUSDT", value):
            query = signed_query(sim, {name: value for name in PARAMS} | {"symbol": symbol})
            async with http.request(method, f"{path}?{query}", headers=h) as r:
                body = await r.json(content_type=None)
                assert r.status != 500, (method, path, value, body)
                assert r.status == 200 or isinstance(body.get("code"), int), (method, path, value, body)
    async with http.get("/fapi/v1/time") as r:
        assert r.status == 200


async def test_an_oversized_request_line_is_refused_and_serving_continues(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"/fapi/v1/klines?symbol={'X' * 20_000}") as r:
        assert 400 <= r.status < 500  # refused by the HTTP parser, before any route
    async with http.get("/fapi/v1/time") as r:
        assert r.status == 200
