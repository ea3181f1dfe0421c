"""Bad input gets Binance's JSON error with the right status and code, and the server keeps serving."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from perpbot.simulator.control import BRIEF_OMITS
from perpbot.simulator.server import SimServer
from tests.simulator.conftest import signed_query

ORDER = {"symbol": "XRPUSDT", "side": "BUY", "type": "MARKET", "quantity": "10"}


async def _post_order(http: aiohttp.ClientSession, sim: SimServer, **over: Any) -> tuple[int, dict[str, Any]]:
    params = {k: v for k, v in {**ORDER, **over}.items() if v is not None}
    async with http.post(
        f"/fapi/v1/order?{signed_query(sim, params)}", headers={"X-MBX-APIKEY": sim.cfg.api_key}
    ) as r:
        return r.status, await r.json()


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"symbol": None}, -1102),
        ({"quantity": None}, -1102),
        ({"symbol": "NOPEUSDT"}, -1121),
        ({"quantity": "10.05"}, -1111),
        ({"quantity": "1"}, -4164),
        ({"quantity": "1e3"}, -1100),
        ({"type": "STOP_MARKET"}, -4120),
        ({"type": "TAKE_PROFIT_MARKET"}, -4120),
        ({"type": "BOGUS"}, -1116),
        ({"side": "UP"}, -1117),
        ({"newClientOrderId": "has space"}, -1100),
        ({"newClientOrderId": "x" * 37}, -1100),
        ({"positionSide": "LONG"}, -4061),
        ({"reduceOnly": "true"}, -2022),
    ],
)
async def test_order_refusals(
    sim: SimServer, http: aiohttp.ClientSession, over: dict[str, Any], code: int
) -> None:
    status, body = await _post_order(http, sim, **over)
    assert (status, body["code"]) == (400, code), body
    status, body = await _post_order(http, sim)
    assert status == 200 and body["status"] == "NEW"  # ACK by default; the server still serves


async def test_algo_client_ids_are_unique_among_open_orders(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    await _post_order(http, sim)
    h = {"X-MBX-APIKEY": sim.cfg.api_key}
    stop = round(sim.venue.mark("XRPUSDT") * 0.9, 4)
    algo = {
        "symbol": "XRPUSDT",
        "side": "SELL",
        "type": "STOP_MARKET",
        "quantity": "10",
        "triggerPrice": str(stop),
        "reduceOnly": "true",
        "algoType": "CONDITIONAL",
        "clientAlgoId": "dup-1",
    }
    async with http.post("/fapi/v1/algoOrder", data=signed_query(sim, algo), headers=h) as r:
        assert r.status == 200  # signed parameters in the body
    async with http.post("/fapi/v1/algoOrder", data=signed_query(sim, algo), headers=h) as r:
        assert r.status == 400 and (await r.json())["code"] == -4116
    async with http.get(f"/fapi/v1/algoOrder?{signed_query(sim, {'symbol': 'XRPUSDT'})}", headers=h) as r:
        assert r.status == 400 and (await r.json())["code"] == -1102


async def test_unknown_route_wrong_method_and_oversized_body(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    async with http.get("/fapi/v1/nothing") as r:
        assert r.status == 404 and (await r.json())["code"] == -5000
    async with http.patch("/fapi/v1/order") as r:
        assert r.status == 405 and (await r.json())["code"] == -1000
    async with http.post("/fapi/v1/order", data=b"a=" + b"x" * (sim.cfg.max_body_bytes + 10)) as r:
        assert r.status == 413 and (await r.json())["code"] == -1000
    async with http.get("/fapi/v1/klines?symbol=XRPUSDT&interval=7m") as r:
        assert r.status == 400 and (await r.json())["code"] == -1120
    async with http.get("/fapi/v1/klines?symbol=XRPUSDT&interval=15m&limit=abc") as r:
        assert r.status == 400 and (await r.json())["code"] == -1100
    async with http.get("/fapi/v1/time") as r:
        assert r.status == 200


async def test_control_endpoints(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.post("/sim/advance?bars=0") as r:
        assert r.status == 400 and (await r.json())["code"] == -1130
    for gap in ("-5", "abc", "10001"):
        async with http.post(f"/sim/advance?bars=1&close_gap_ms={gap}") as r:
            body = await r.json()
            assert r.status == 400 and body["code"] == -1130 and "close_gap_ms" in body["msg"]
    async with http.get("/sim/state") as r:
        before = await r.json()
    async with http.post("/sim/advance?bars=1&close_gap_ms=5") as r:
        assert (await r.json())["advanced"] == 1
    before["replay_time_ms"] += 15 * 60_000
    async with http.post("/sim/advance?bars=4") as r:
        assert (await r.json())["advanced"] == 4
    async with http.get("/sim/state") as r:
        after = await r.json()
    assert after["replay_time_ms"] == before["replay_time_ms"] + 4 * 15 * 60_000
    assert after["balance"] == "1000" and after["positions"] == [] and after["fill_count"] == 0


async def test_the_brief_state_leaves_out_what_grows_and_advance_answers_the_fill_count(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    """A harness polling many times a second reads ``?brief=1`` (no fault log, no order books);
    a driver learns the venue's execution count from the advance answer, without a state read."""
    async with http.post("/sim/faults", json=[{"kind": "http_error", "status": 502}]) as r:
        assert r.status == 200
    order = {"symbol": "XRPUSDT", "side": "BUY", "type": "MARKET", "quantity": "100"}
    key = {"X-MBX-APIKEY": sim.cfg.api_key}
    async with http.post(f"/fapi/v1/order?{signed_query(sim, order)}", headers=key) as r:
        assert r.status == 502  # the fault took it
    async with http.post(f"/fapi/v1/order?{signed_query(sim, order)}", headers=key) as r:
        assert r.status == 200, await r.text()
    async with http.post("/sim/advance?bars=1") as r:
        advanced = await r.json()
    async with http.get("/sim/state") as r:
        full = await r.json()
    async with http.get("/sim/state?brief=1") as r:
        brief = await r.json()
    assert advanced["fill_count"] == full["fill_count"] >= 1
    assert len(full["faults"]) == 1 and all(k in full for k in BRIEF_OMITS)
    assert {k: v for k, v in full.items() if k not in BRIEF_OMITS} == brief


async def test_position_mode_changes_are_refused_where_binance_would(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    h = {"X-MBX-APIKEY": sim.cfg.api_key}
    async with http.post(
        "/fapi/v1/positionSide/dual", data=signed_query(sim, {"dualSidePosition": "false"}), headers=h
    ) as r:
        assert (await r.json())["code"] == -4059
    await _post_order(http, sim)
    async with http.post(
        "/fapi/v1/positionSide/dual", data=signed_query(sim, {"dualSidePosition": "true"}), headers=h
    ) as r:
        assert (await r.json())["code"] == -4068
    async with http.get(f"/fapi/v1/positionSide/dual?{signed_query(sim, {})}", headers=h) as r:
        assert await r.json() == {"dualSidePosition": False}
    async with http.get(f"/fapi/v1/multiAssetsMargin?{signed_query(sim, {})}", headers=h) as r:
        assert await r.json() == {"multiAssetsMargin": False}


async def test_ping_without_pong_drops_the_connection(start_sim: Any) -> None:
    srv = await start_sim(ping_interval_s=0.1, pong_timeout_s=0.25)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{srv.port}/market/ws", autoping=False) as mute:
            pings = 0
            while True:
                msg = await mute.receive(timeout=5)
                if msg.type is aiohttp.WSMsgType.PING:
                    pings += 1
                    continue
                break
            assert pings >= 2 and mute.close_code == 1008
        async with http.ws_connect(f"http://127.0.0.1:{srv.port}/market/ws") as polite:  # answers pings
            with pytest.raises(TimeoutError):  # pings keep coming and are answered: no close
                await asyncio.wait_for(polite.receive(), 0.8)
            assert not polite.closed


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--days", "x"], "--days"),
        (["--speed", "-1"], "--speed"),
        (["--port", "70000"], "--port"),
        (["--host", "0.0.0.0"], "--allow-remote"),
        (["--symbols", "XRPUSDT", "--all"], "--all"),
        (["--data-dir", "/nonexistent"], "--data-dir"),
        (["--from", "yesterday-ish"], "--from"),
    ],
)
def test_cli_bad_options_are_one_line_exit_2(args: list[str], culprit: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "perpbot.cli.main", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and culprit in lines[0] and "Traceback" not in proc.stderr
