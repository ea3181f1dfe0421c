"""Every injected fault kind, and what an unmodified ccxt client sees when it hits."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import ccxt.pro
import pytest

from perpbot.errors import ConfigError
from perpbot.simulator.faults import load_fault_file
from perpbot.simulator.server import SimServer
from tests.simulator.test_ws_market import _recv, _wait_for

SYM = "XRP/USDT:USDT"


async def _inject(http: aiohttp.ClientSession, *faults: dict[str, Any]) -> dict[str, Any]:
    async with http.post("/sim/faults", data=json.dumps(list(faults))) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_http_5xx_for_a_count_on_one_endpoint(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: Any
) -> None:
    await ex.load_markets()
    await _inject(http, {"kind": "http_error", "status": 502, "count": 1, "endpoint": "/fapi/v3/account"})
    await ex.fetch_positions()  # another endpoint: unaffected
    with pytest.raises(ccxt.OperationFailed) as err:
        await ex.fetch_balance()
    assert "-1000" in str(err.value)
    assert (await ex.fetch_balance())["USDT"]["total"] == 1000.0  # the count is used up


async def test_unknown_error_after_execution_loses_the_reply_not_the_order(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: Any
) -> None:
    await ex.load_markets()
    await _inject(http, {"kind": "unknown_after_execution", "count": 1, "symbol": "XRPUSDT"})
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await ex.create_order(SYM, "market", "buy", 10, params={"newClientOrderId": "lost-reply-1"})
    found = await ex.fetch_order(None, SYM, {"clientOrderId": "lost-reply-1"})
    assert found["status"] == "closed" and found["filled"] == 10.0
    assert (await ex.fetch_positions())[0]["contracts"] == 10.0


async def test_latency(sim: SimServer, ex: ccxt.pro.binanceusdm, http: Any) -> None:
    await _inject(http, {"kind": "latency", "ms": 300, "count": 1, "endpoint": "/fapi/v1/time"})
    t0 = time.perf_counter()
    await ex.fetch_time()
    assert time.perf_counter() - t0 >= 0.3
    t0 = time.perf_counter()
    await ex.fetch_time()
    assert time.perf_counter() - t0 < 0.3


async def test_rate_limit_burst(sim: SimServer, ex: ccxt.pro.binanceusdm, http: Any) -> None:
    await _inject(http, {"kind": "rate_limit_burst", "count": 2})
    for _ in range(2):
        with pytest.raises(ccxt.DDoSProtection):
            await ex.fetch_time()
    assert await ex.fetch_time() > 0


async def test_time_skew_gives_invalid_nonce_until_the_client_resyncs(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: Any
) -> None:
    await ex.load_markets()
    await _inject(http, {"kind": "time_skew", "ms": -20_000, "seconds": 60})
    with pytest.raises(ccxt.InvalidNonce):
        await ex.fetch_balance()
    await ex.load_time_difference()
    assert (await ex.fetch_balance())["USDT"]["total"] == 1000.0


@pytest.mark.parametrize(
    ("code", "kind", "exc"),
    [
        (-2019, "order", ccxt.InsufficientFunds),
        (-2022, "order", ccxt.InvalidOrder),
        (-4164, "order", ccxt.InvalidOrder),
        (-1111, "order", ccxt.BadRequest),
        (-4118, "algo", ccxt.OperationRejected),
        # a protective order refused on a fast market / a full algo book (Binance's own answers)
        (-2021, "algo", ccxt.OrderImmediatelyFillable),
        (-4045, "algo", ccxt.OperationRejected),
    ],
)
async def test_reject_next_orders_with_a_code(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: Any, code: int, kind: str, exc: type[Exception]
) -> None:
    await ex.load_markets()
    ex.exceptions["exact"] = {**ex.exceptions["exact"], **ex.exceptions["linear"]["exact"]}  # live mapping
    await ex.create_order(SYM, "market", "buy", 10)
    await _inject(http, {"kind": "reject_orders", "code": code, "count": 1, "order_kind": kind})
    stop = round(sim.venue.mark("XRPUSDT") * 0.9, 4)
    params = {"stopPrice": stop, "reduceOnly": True}
    if kind == "order":
        await ex.create_order(SYM, "STOP_MARKET", "sell", 10, None, params)  # the other book: unaffected
        with pytest.raises(exc) as err:
            await ex.create_order(SYM, "market", "buy", 10)
        await ex.create_order(SYM, "market", "buy", 10)  # count used up
    else:
        await ex.create_order(SYM, "market", "buy", 10)
        with pytest.raises(exc) as err:
            await ex.create_order(SYM, "STOP_MARKET", "sell", 10, None, params)
        assert await ex.fetch_open_orders(SYM, params={"trigger": True}) == []
    assert str(code) in str(err.value)


async def test_dropped_market_connection_is_1006(sim: SimServer, ex: ccxt.pro.binanceusdm, http: Any) -> None:
    await ex.load_markets()
    watch = asyncio.ensure_future(ex.watch_ohlcv(SYM, "15m"))
    await _wait_for(lambda: sim.market_hub.subs)
    await _inject(http, {"kind": "drop_connection", "stream": "market"})
    with pytest.raises(ccxt.NetworkError) as err:
        await asyncio.wait_for(watch, 5)
    assert "1006" in str(err.value)


async def test_dropped_private_connection(sim: SimServer, ex: ccxt.pro.binanceusdm, http: Any) -> None:
    await ex.load_markets()
    watch = asyncio.ensure_future(ex.watch_orders(SYM))
    await _wait_for(lambda: sim.private_hub.conns)
    await _inject(http, {"kind": "drop_connection", "stream": "private"})
    with pytest.raises(ccxt.NetworkError) as err:
        await asyncio.wait_for(watch, 5)
    assert "1006" in str(err.value)


async def test_silent_stream_answers_pings_but_sends_no_data(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect("/market/ws", autoping=False) as ws:
        await ws.send_json({"method": "SUBSCRIBE", "params": ["xrpusdt@kline_15m"], "id": 1})
        assert await _recv(ws) == {"result": None, "id": 1}
        await _inject(http, {"kind": "silent_stream", "stream": "market", "seconds": 30})
        async with http.post("/sim/advance?bars=2") as r:
            assert (await r.json())["advanced"] == 2
        await ws.ping(b"alive?")
        msg = await ws.receive(timeout=2)
        assert msg.type is aiohttp.WSMsgType.PONG and msg.data == b"alive?"  # no kline came before it
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.3)


async def test_expired_listen_key_fault(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": sim.cfg.api_key}) as r:
        key = (await r.json())["listenKey"]
    async with http.ws_connect(f"/private/ws?listenKey={key}") as ws:
        await _wait_for(lambda: sim.private_hub.conns)
        await _inject(http, {"kind": "expire_listen_key"})
        assert (await _recv(ws))["e"] == "listenKeyExpired"
    async with http.get("/sim/state") as r:
        state = await r.json()
    assert [f["kind"] for f in state["faults"]] == ["expire_listen_key"] and state["faults"][0]["hits"] == 1
    assert state["faults"][0]["told"] == 1  # one socket got the event
    assert state["listen_key_active"] is False
    # A key that dies while no socket is on it (a client reconnecting): nobody is told.
    async with http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": sim.cfg.api_key}) as r:
        key = (await r.json())["listenKey"]
    await _wait_for(lambda: not sim.private_hub.conns)
    await _inject(http, {"kind": "expire_listen_key"})
    # Nor is a socket the venue has just dropped (a drop right before the expiry).
    async with http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": sim.cfg.api_key}) as r:
        key = (await r.json())["listenKey"]
    async with http.ws_connect(f"/private/ws?listenKey={key}") as ws:
        await _wait_for(lambda: sim.private_hub.conns)
        await _inject(http, {"kind": "drop_connection", "stream": "private"}, {"kind": "expire_listen_key"})
    async with http.get("/sim/state") as r:
        faults = (await r.json())["faults"]
    assert [(f["kind"], f["hits"], f.get("told")) for f in faults[1:]] == [
        ("expire_listen_key", 1, 0),
        ("drop_connection", 1, None),
        ("expire_listen_key", 1, 0),
    ]


async def test_bad_fault_documents(sim: SimServer, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    for body in (
        "{not json",
        json.dumps([{"kind": "meteor"}]),
        json.dumps([{"kind": "latency"}]),
        json.dumps([{"kind": "reject_orders", "code": -9999}]),
    ):
        async with http.post("/sim/faults", data=body) as r:
            assert r.status == 400 and (await r.json())["code"] == -1130
    bad = tmp_path / "f.json"
    bad.write_text(json.dumps({"faults": [{"kind": "http_error", "status": 404}]}))
    with pytest.raises(ConfigError, match="status"):
        load_fault_file(bad, 0)
    good = tmp_path / "g.json"
    good.write_text(json.dumps({"faults": [{"kind": "http_error", "status": 503, "count": 2}]}))
    assert load_fault_file(good, 0)[0].remaining == 2


async def test_faults_file_at_start(start_sim: Any, tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(
        json.dumps([{"kind": "http_error", "status": 503, "count": 1, "endpoint": "/fapi/v1/time"}])
    )
    srv = await start_sim(faults_file=path)
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{srv.port}") as http:
        async with http.get("/fapi/v1/time") as r:
            assert r.status == 503
        async with http.get("/fapi/v1/time") as r:
            assert r.status == 200
