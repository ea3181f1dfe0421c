"""User-data streams: raw and combined framing, a full trade followed from REST and the stream,
ccxt.pro's ``watch_orders``, and the listen key's lifecycle."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import ccxt.pro
import pytest

from perpbot.simulator.server import SimServer
from tests.simulator.conftest import ccxt_client
from tests.simulator.test_ws_market import _recv, _wait_for

SYM = "XRP/USDT:USDT"


async def _listen_key(http: aiohttp.ClientSession, sim: SimServer) -> str:
    async with http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": sim.cfg.api_key}) as r:
        assert r.status == 200
        return (await r.json())["listenKey"]


async def _drain(ws: aiohttp.ClientWebSocketResponse, quiet: float = 0.3) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            msg = await ws.receive(timeout=quiet)
        except TimeoutError:
            return out
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return out
        out.append(json.loads(msg.data))


async def test_full_trade_followed_from_rest_and_the_stream(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: aiohttp.ClientSession
) -> None:
    await ex.load_markets()
    key = await _listen_key(http, sim)
    async with http.ws_connect(f"/private/ws?listenKey={key}") as ws:
        await _wait_for(lambda: sim.private_hub.conns)
        entry = await ex.create_order(SYM, "market", "buy", 100, params={"newClientOrderId": "ft-entry"})
        last = sim.venue.mark("XRPUSDT")
        sl_px, tp_px = round(last * 0.95, 4), round(last * 1.002, 4)
        sl = await ex.create_order(
            SYM,
            "market",
            "sell",
            100,
            None,
            {"stopLossPrice": sl_px, "reduceOnly": True, "clientAlgoId": "ft-sl"},
        )
        tp = await ex.create_order(
            SYM,
            "market",
            "sell",
            100,
            None,
            {"takeProfitPrice": tp_px, "reduceOnly": True, "clientAlgoId": "ft-tp"},
        )
        for _ in range(200):  # candles until the take-profit fires
            sim.replay.advance(1)
            if not sim.venue.engine.position("XRPUSDT"):
                break
        assert sim.venue.engine.position("XRPUSDT") is None
        # REST: TP finished, SL still open (the exchange does not cancel siblings), position flat.
        got_tp = await ex.fetch_order(None, SYM, {"trigger": True, "clientOrderId": "ft-tp"})
        assert got_tp["id"] == tp["id"]
        assert got_tp["status"] == "closed" and got_tp["info"]["algoStatus"] == "FINISHED"
        still = await ex.fetch_open_orders(SYM, params={"trigger": True})
        assert [o["id"] for o in still] == [sl["id"]]
        await ex.cancel_order(sl["id"], SYM, {"trigger": True})
        assert await ex.fetch_open_orders(SYM, params={"trigger": True}) == []
        assert await ex.fetch_positions() == []
        trades = await ex.fetch_my_trades(SYM)
        exit_order = got_tp["info"]["actualOrderId"]
        assert [t["order"] for t in trades] == [entry["id"], exit_order]
        events = await _drain(ws)
    kinds = [(e["e"], e["o"].get("X") if e["e"] != "ACCOUNT_UPDATE" else e["a"]["m"]) for e in events]
    assert kinds[:3] == [
        ("ORDER_TRADE_UPDATE", "NEW"),
        ("ORDER_TRADE_UPDATE", "FILLED"),
        ("ACCOUNT_UPDATE", "ORDER"),
    ]
    assert kinds[3:5] == [("ALGO_UPDATE", "NEW"), ("ALGO_UPDATE", "NEW")]
    algo = [e["o"] for e in events if e["e"] == "ALGO_UPDATE"]
    assert [(a["caid"], a["X"]) for a in algo] == [
        ("ft-sl", "NEW"),
        ("ft-tp", "NEW"),
        ("ft-tp", "TRIGGERING"),  # Binance: trigger met, forwarded; no order id yet
        ("ft-tp", "TRIGGERED"),
        ("ft-tp", "FINISHED"),
        ("ft-sl", "CANCELED"),
    ]
    assert algo[2]["ai"] == "" and algo[3]["ai"] == exit_order and float(algo[3]["tp"]) == tp_px
    fills = [e for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    assert [f["o"]["c"] for f in fills] == ["ft-entry", "ft-tp"]
    exit_fill = fills[1]["o"]
    assert exit_fill["ot"] == "MARKET" and exit_fill["R"] is True and str(exit_fill["i"]) == exit_order
    assert float(exit_fill["rp"]) > 0 and exit_fill["T"] == fills[1]["E"]
    assert type(exit_fill["i"]) is int and type(exit_fill["t"]) is int and isinstance(exit_fill["l"], str)


async def test_ccxt_watch_orders_parses_executions(sim: SimServer, ex: ccxt.pro.binanceusdm) -> None:
    await ex.load_markets()
    watch = asyncio.ensure_future(ex.watch_orders(SYM))
    await _wait_for(lambda: sim.private_hub.conns)
    order = await ex.create_order(SYM, "market", "sell", 10, params={"newClientOrderId": "wo-1"})
    seen = await asyncio.wait_for(watch, 5)
    while seen[-1]["status"] != "closed":
        seen = await asyncio.wait_for(ex.watch_orders(SYM), 5)
    last = seen[-1]
    assert last["id"] == order["id"] and last["clientOrderId"] == "wo-1" and last["filled"] == 10.0
    assert last["side"] == "sell" and last["average"] == order["average"]
    sl_price = round(sim.venue.mark("XRPUSDT") * 1.05, 4)
    await ex.create_order(
        SYM,
        "STOP_MARKET",
        "buy",
        10,
        None,
        {"stopPrice": sl_price, "reduceOnly": True, "clientAlgoId": "wo-sl"},
    )
    algo = await asyncio.wait_for(ex.watch_orders(SYM), 5)
    assert algo[-1]["clientOrderId"] == "wo-sl" and algo[-1]["status"] == "open"
    assert algo[-1]["triggerPrice"] == sl_price


async def test_official_library_style_private_stream_gets_combined_frames(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: aiohttp.ClientSession
) -> None:
    await ex.load_markets()
    key = await _listen_key(http, sim)
    async with http.ws_connect("/private/stream") as ws:
        await ws.send_json({"method": "SUBSCRIBE", "params": [key], "id": 1})
        assert await _recv(ws) == {"result": None, "id": 1}
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 2})
        assert await _recv(ws) == {"result": [key], "id": 2}
        await ex.create_order(SYM, "market", "buy", 10)
        frames = await _drain(ws)
    assert frames and all(f["stream"] == key for f in frames)
    assert [f["data"]["e"] for f in frames] == ["ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE"]


async def test_listen_key_lifecycle(sim: SimServer, http: aiohttp.ClientSession) -> None:
    h = {"X-MBX-APIKEY": sim.cfg.api_key}
    key = await _listen_key(http, sim)
    assert await _listen_key(http, sim) == key  # POST returns the active key
    async with http.put("/fapi/v1/listenKey", headers=h) as r:
        assert r.status == 200 and (await r.json())["listenKey"] == key
    async with http.ws_connect(f"/private/ws/{key}") as ws:
        await _wait_for(lambda: sim.private_hub.conns)
        async with http.delete("/fapi/v1/listenKey", headers=h) as r:
            assert r.status == 200
        expired = await _recv(ws)
        assert expired["e"] == "listenKeyExpired" and expired["listenKey"] == key
        assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    async with http.put("/fapi/v1/listenKey", headers=h) as r:
        assert r.status == 400 and (await r.json())["code"] == -1125
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(f"/private/ws?listenKey={key}")
    assert err.value.status == 400
    assert await _listen_key(http, sim) != key  # a new key after the old one died


async def test_listen_key_expires_after_its_validity(start_sim: Any) -> None:
    srv = await start_sim(listen_key_validity_s=0.5)
    client = ccxt_client(srv)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{srv.port}") as http:
            key = await _listen_key(http, srv)
            async with http.ws_connect(f"/private/ws?listenKey={key}") as ws:
                msg = await _recv(ws, timeout=5)
        assert msg["e"] == "listenKeyExpired"
    finally:
        await client.close()


async def test_ccxt_watch_balance_reads_account_updates(sim: SimServer, ex: ccxt.pro.binanceusdm) -> None:
    await ex.load_markets()
    watch = asyncio.ensure_future(ex.watch_balance())
    await _wait_for(lambda: sim.private_hub.conns)
    await ex.create_order(SYM, "market", "buy", 10)
    bal = await asyncio.wait_for(watch, 5)
    assert bal["USDT"]["total"] == pytest.approx(sim.venue.engine.balance())
    assert bal["USDT"]["total"] < 1000.0  # the commission was paid


async def test_private_stream_refuses_bad_subscriptions(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect("/private/stream") as ws:
        await ws.send_str("[1, 2")
        assert (await _recv(ws))["error"]["code"] == 3
        await ws.send_json({"method": "SUBSCRIBE", "params": ["not-a-live-key"], "id": 4})
        reply = await _recv(ws)
        assert reply["id"] == 4 and reply["error"]["code"] == 2
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 5})
        assert await _recv(ws) == {"result": [], "id": 5}


async def test_expired_listen_key_leaves_the_socket_open_and_silent(
    start_sim: Any,
) -> None:
    """Binance: ``listenKeyExpired`` "is not related to the websocket disconnection"; no more user
    data comes on that socket until a new valid key is used. A server that closed the socket would
    let a client that ignores the event (ccxt does) reconnect and recover, which it cannot live."""
    srv = await start_sim(listen_key_validity_s=0.5)
    client = ccxt_client(srv)
    try:
        await client.load_markets()
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{srv.port}") as http:
            key = await _listen_key(http, srv)
            async with http.ws_connect(f"/private/ws?listenKey={key}") as ws:
                msg = await _recv(ws, timeout=5)
                assert msg["e"] == "listenKeyExpired" and msg["listenKey"] == key
                assert await _listen_key(http, srv) != key  # a new key: its events are not ours
                await client.create_order(SYM, "market", "buy", 10)
                with pytest.raises(TimeoutError):  # neither a close frame nor an event
                    await ws.receive(timeout=1.0)
                assert not ws.closed
    finally:
        await client.close()


async def test_a_trigger_refused_by_the_matching_engine_is_triggering_then_rejected(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: aiohttp.ClientSession
) -> None:
    """A reduce-only stop that fires while flat: Binance's algo service forwards it (TRIGGERING)
    and the matching engine refuses it (REJECTED); no order is created."""
    await ex.load_markets()
    key = await _listen_key(http, sim)
    async with http.ws_connect(f"/private/ws?listenKey={key}") as ws:
        await _wait_for(lambda: sim.private_hub.conns)
        stop = {"stopLossPrice": round(sim.venue.mark("XRPUSDT") * 0.999, 4), "reduceOnly": True}
        await ex.create_order(SYM, "market", "sell", 10, None, {**stop, "clientAlgoId": "fl-sl"})
        for _ in range(200):  # candles until the stop fires
            sim.replay.advance(1)
            if not sim.venue.open_algos("XRPUSDT"):
                break
        events = await _drain(ws)
    algo = [e["o"] for e in events if e["e"] == "ALGO_UPDATE"]
    assert [(a["caid"], a["X"], a["ai"]) for a in algo] == [
        ("fl-sl", "NEW", ""),
        ("fl-sl", "TRIGGERING", ""),
        ("fl-sl", "REJECTED", ""),
    ]
    assert not [e for e in events if e["e"] == "ORDER_TRADE_UPDATE"]


async def test_a_leverage_change_is_pushed_as_account_config_update(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: aiohttp.ClientSession
) -> None:
    """Binance pushes ``ACCOUNT_CONFIG_UPDATE`` (``ac``: symbol, leverage) when a symbol's leverage
    changes; it is not an order/account event, so the delivered-event count does not move."""
    await ex.load_markets()
    key = await _listen_key(http, sim)
    async with http.ws_connect(f"/private/ws?listenKey={key}") as ws:
        await _wait_for(lambda: sim.private_hub.conns)
        before = sim.private_hub.pushed
        new = sim.venue.engine.leverage("XRPUSDT") % 20 + 1
        await ex.set_leverage(new, SYM)
        frames = await _drain(ws)
        await ex.set_leverage(new, SYM)  # no change: nothing pushed
        again = await _drain(ws)
    assert [(f["e"], f["ac"]) for f in frames] == [("ACCOUNT_CONFIG_UPDATE", {"s": "XRPUSDT", "l": new})]
    assert isinstance(frames[0]["E"], int) and again == []
    assert sim.private_hub.pushed == before


async def test_an_adl_execution_is_streamed_with_status_new_as_binance_documents(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: aiohttp.ClientSession
) -> None:
    """Binance's Order Update doc: on ADL "c shows as adl_autoclose, X shows as NEW" (and
    "autoclose-XXX", X NEW on a liquidation); the execution is ``x=CALCULATED`` with ``l``/``z``. A
    client waiting for X=FILLED to close its books would wait for ever live."""
    await ex.load_markets()
    await ex.create_order(SYM, "market", "buy", 100)
    key = await _listen_key(http, sim)
    async with http.ws_connect(f"/private/ws?listenKey={key}") as ws:
        await _wait_for(lambda: sim.private_hub.conns)
        async with http.post("/sim/faults", data=json.dumps([{"kind": "adl", "fraction": 0.5}])) as r:
            assert r.status == 200
        frames = await _drain(ws)
    (adl,) = [f["o"] for f in frames if f["e"] == "ORDER_TRADE_UPDATE"]
    assert (adl["c"], adl["x"], adl["X"], adl["l"], adl["z"]) == (
        "adl_autoclose",
        "CALCULATED",
        "NEW",
        "50",
        "50",
    )
    got = await ex.fetch_order(str(adl["i"]), SYM)  # REST: the order's final state
    assert got["status"] == "closed" and got["filled"] == 50.0
