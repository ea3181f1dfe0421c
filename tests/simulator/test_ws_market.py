"""Market streams: Binance's subscription protocol, intra-candle klines along the engine's path,
combined framing, and ccxt.pro's ``watch_ohlcv_for_symbols`` parsing them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import ccxt.pro

from perpbot.data.schema import BAR_MS
from perpbot.simulator.server import SimServer
from tests.simulator.conftest import ccxt_client


async def _recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> Any:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def _wait_for(cond: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_subscribe_list_unsubscribe_with_binance_acks(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect("/market/ws") as ws:
        await ws.send_json(
            {"method": "SUBSCRIBE", "params": ["xrpusdt@kline_15m", "trxusdt@kline_15m"], "id": 1}
        )
        assert await _recv(ws) == {"result": None, "id": 1}
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 2})
        assert await _recv(ws) == {"result": ["trxusdt@kline_15m", "xrpusdt@kline_15m"], "id": 2}
        await ws.send_json({"method": "UNSUBSCRIBE", "params": ["trxusdt@kline_15m"], "id": 3})
        assert await _recv(ws) == {"result": None, "id": 3}
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 4})
        assert await _recv(ws) == {"result": ["xrpusdt@kline_15m"], "id": 4}


async def test_malformed_messages_get_binance_error_codes_and_the_socket_stays(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect("/market/ws/0") as ws:
        await ws.send_str("{not json")
        assert (await _recv(ws))["error"]["code"] == 3
        await ws.send_json({"method": "SUBSCRIBE", "params": "xrpusdt@kline_15m", "id": 5})
        assert await _recv(ws) == {
            "error": {"code": 1, "msg": "Invalid value type: expected params to be a list of strings"},
            "id": 5,
        }
        await ws.send_json({"method": "SUBSCRIBE", "params": ["Bad Stream"], "id": 6})
        assert (await _recv(ws))["error"]["code"] == 2
        await ws.send_json({"method": "FLY", "id": 7})
        assert (await _recv(ws))["error"]["code"] == 2
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 8, "extra": 1})
        assert (await _recv(ws))["error"]["code"] == 0
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 9})
        assert await _recv(ws) == {"result": [], "id": 9}


async def test_each_candle_streams_the_engine_path_then_the_closed_kline(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    s = sim.market.series["XRPUSDT"]
    t = sim.replay.next_open_ms
    i = s.index_at(t)
    path = sim.venue.engine.intrabar_path("XRPUSDT", i - sim.venue.offsets["XRPUSDT"])
    async with http.ws_connect("/market/stream?streams=xrpusdt@kline_15m") as ws:
        await _wait_for(lambda: "xrpusdt@kline_15m" in sim.market_hub.subs)
        async with http.post("/sim/advance?bars=1") as r:
            assert (await r.json())["advanced"] == 1
        frames = [await _recv(ws) for _ in range(4)]
    assert {f["stream"] for f in frames} == {"xrpusdt@kline_15m"}
    ks = [f["data"]["k"] for f in frames]
    assert [k["x"] for k in ks] == [False, False, False, True]
    assert [float(k["c"]) for k in ks] == list(path)  # open, first extreme, second extreme, close
    assert all(k["t"] == t and k["T"] == t + BAR_MS - 1 and k["i"] == "15m" for k in ks)
    assert (
        float(ks[-1]["h"]) == s.high[i]
        and float(ks[-1]["l"]) == s.low[i]
        and float(ks[-1]["v"]) == s.volume[i]
    )
    assert [f["data"]["E"] for f in frames] == sorted(f["data"]["E"] for f in frames)
    assert frames[-1]["data"]["E"] == t + BAR_MS == sim.venue.now_ms  # replay time, not wall time


async def test_too_many_incoming_messages_close_the_connection(start_sim: Any) -> None:
    srv = await start_sim()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{srv.port}/market/ws") as ws,
    ):
        for n in range(12):
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": n})
        replies = []
        while True:
            msg = await ws.receive(timeout=5)
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            replies.append(json.loads(msg.data))
        assert len(replies) == 10
        assert ws.close_code == 1008


async def test_stream_limit_per_connection(start_sim: Any) -> None:
    srv = await start_sim()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://127.0.0.1:{srv.port}/market/ws") as ws,
    ):
        names = [f"sym{n}usdt@kline_15m" for n in range(1025)]
        await ws.send_json({"method": "SUBSCRIBE", "params": names, "id": 1})
        reply = await _recv(ws)
        assert reply["error"]["code"] == 2 and "1024" in reply["error"]["msg"]
        await ws.send_json({"method": "SUBSCRIBE", "params": names[:1024], "id": 2})
        assert await _recv(ws) == {"result": None, "id": 2}


async def test_ccxt_watch_ohlcv_for_symbols(sim: SimServer, ex: ccxt.pro.binanceusdm) -> None:
    await ex.load_markets()
    subs = [["XRP/USDT:USDT", "15m"], ["TRX/USDT:USDT", "15m"]]
    got: dict[str, list[list[float]]] = {}

    async def watch() -> None:
        while len(got) < 2:
            res = await ex.watch_ohlcv_for_symbols(subs)
            for sym, by_tf in res.items():
                got.setdefault(sym, []).extend(by_tf["15m"])

    task = asyncio.ensure_future(watch())
    await _wait_for(lambda: {"xrpusdt@kline_15m", "trxusdt@kline_15m"} <= set(sim.market_hub.subs))
    t = sim.replay.next_open_ms
    sim.replay.advance(1)
    await asyncio.wait_for(task, 5)
    for sym in ("XRPUSDT", "TRXUSDT"):
        rows = got[f"{sym[:3]}/USDT:USDT"]
        assert rows and all(r[0] == t for r in rows)
    s = sim.market.series["XRPUSDT"]
    i = s.index_at(t)
    assert got["XRP/USDT:USDT"][0][1] == s.open[i]


async def test_max_age_closes_the_connection(start_sim: Any) -> None:
    srv = await start_sim(ws_max_age_s=0.3)
    client = ccxt_client(srv)
    try:
        await client.load_markets()
        watch = asyncio.ensure_future(client.watch_ohlcv("XRP/USDT:USDT", "15m"))
        done, _ = await asyncio.wait({watch}, timeout=5)
        assert watch in done
        err = watch.exception()
        assert isinstance(err, ccxt.NetworkError) and "closing code" in str(err)
    finally:
        await client.close()
