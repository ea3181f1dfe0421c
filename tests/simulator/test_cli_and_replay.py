"""``perpbot simulate`` as a process, the replay clock's pacing, recorded data, partial fills and
signed parameters split between query and body."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from perpbot.simulator.server import SimServer
from tests.simulator.conftest import signed_query
from tests.simulator.test_ws_private import _drain, _listen_key

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
LINE_PREFIX = "perpbot simulate listening on http://127.0.0.1:"


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "perpbot.cli.main", "simulate", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_process_prints_one_line_serves_and_exits_0_on_signal(sig: signal.Signals) -> None:
    proc = _spawn("--symbols", "XRPUSDT", "--days", "2", "--speed", "0")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().rstrip("\n")
        assert line.startswith(LINE_PREFIX)
        port = int(line[len(LINE_PREFIX) :].split()[0])
        assert line == f"perpbot simulate listening on http://127.0.0.1:{port} (ws://127.0.0.1:{port})"

        async def ask() -> dict[str, Any]:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/fapi/v1/time") as r:
                return await r.json()

        assert abs(asyncio.run(ask())["serverTime"] - time.time() * 1000) < 5000
        proc.send_signal(sig)
        assert proc.wait(20) == 0
        assert proc.stdout.read() == ""  # exactly one line on stdout
    finally:
        if proc.poll() is None:
            proc.kill()


def test_unreadable_data_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "xrpusdt" / "combined_15m.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"not parquet")
    proc = _spawn("--symbols", "XRPUSDT", "--data-dir", str(tmp_path))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == ""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "combined_15m.parquet" in lines[0] and "Traceback" not in err


async def test_speed_paces_the_replay_by_wall_time(start_sim: Any) -> None:
    srv = await start_sim(speed=40.0)
    t0 = srv.venue.now_ms
    await asyncio.sleep(0.5)
    bars = (srv.venue.now_ms - t0) // (15 * 60_000)
    assert 8 <= bars <= 30  # ~20 candles at 40/s; wide bounds for a loaded machine


async def test_partial_fills_give_one_event_per_execution(start_sim: Any) -> None:
    srv: SimServer = await start_sim(max_fill_qty_per_execution=30.0)
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{srv.port}") as http:
        key = await _listen_key(http, srv)
        async with http.ws_connect(f"/private/ws/{key}") as ws:
            q = signed_query(
                srv,
                {
                    "symbol": "XRPUSDT",
                    "side": "BUY",
                    "type": "MARKET",
                    "quantity": "100",
                    "newOrderRespType": "RESULT",
                },
            )
            async with http.post("/fapi/v1/order", data=q, headers={"X-MBX-APIKEY": srv.cfg.api_key}) as r:
                body = await r.json()
            events = await _drain(ws)
    assert body["status"] == "FILLED" and body["executedQty"] == "100"
    trades = [e["o"] for e in events if e["e"] == "ORDER_TRADE_UPDATE" and e["o"]["x"] == "TRADE"]
    assert [(t["X"], t["l"], t["z"]) for t in trades] == [
        ("PARTIALLY_FILLED", "30", "30"),
        ("PARTIALLY_FILLED", "30", "60"),
        ("PARTIALLY_FILLED", "30", "90"),
        ("FILLED", "10", "100"),
    ]
    assert len({t["t"] for t in trades}) == 4 and len({t["i"] for t in trades}) == 1


async def test_signed_parameters_split_between_query_and_body_on_delete(sim: SimServer) -> None:
    from perpbot.simulator.auth import sign

    h = {"X-MBX-APIKEY": sim.cfg.api_key}
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{sim.port}") as http:
        q = signed_query(sim, {"symbol": "XRPUSDT", "side": "BUY", "type": "MARKET", "quantity": "10"})
        async with http.post(f"/fapi/v1/order?{q}", headers=h) as r:
            assert r.status == 200
        stop = round(sim.venue.mark("XRPUSDT") * 0.9, 4)
        body = signed_query(
            sim,
            {
                "symbol": "XRPUSDT",
                "side": "SELL",
                "type": "STOP_MARKET",
                "quantity": "10",
                "triggerPrice": str(stop),
                "algoType": "CONDITIONAL",
                "clientAlgoId": "split-1",
            },
        )
        async with http.post("/fapi/v1/algoOrder", data=body, headers=h) as r:
            assert r.status == 200
        query = "symbol=XRPUSDT&clientAlgoId=split-1"
        rest = f"timestamp={sim.server_ms()}&recvWindow=5000"
        sig = sign(sim.cfg.api_secret, query + rest)
        async with http.delete(f"/fapi/v1/algoOrder?{query}", data=f"{rest}&signature={sig}", headers=h) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["msg"] == "success"


@pytest.mark.realdata
@pytest.mark.skipif(not (REAL_DATA / "xrpusdt" / "combined_15m.parquet").is_file(), reason="no recorded data")
async def test_recorded_data_replays_from_the_requested_time(start_sim: Any) -> None:
    from perpbot.simulator.market import parse_time

    start = parse_time("2025-06-01")
    srv: SimServer = await start_sim(
        data_dir=REAL_DATA, from_ms=start, days=2, symbols=("XRPUSDT", "DOGEUSDT")
    )
    assert srv.replay.next_open_ms == start and srv.venue.now_ms == start
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{srv.port}") as http:
        async with http.get("/fapi/v1/klines?symbol=XRPUSDT&interval=15m&limit=3") as r:
            rows = await r.json()
        s = srv.market.series["XRPUSDT"]
        i = s.index_at(start - 15 * 60_000)
        assert rows[-1][0] == start - 15 * 60_000 and float(rows[-1][4]) == s.close[i]
        async with http.post("/sim/advance?bars=1000") as r:
            assert json.loads(await r.text())["advanced"] == 192  # two days, then the end


async def test_shutdown_says_going_away_to_stream_clients(start_sim: Any) -> None:
    srv: SimServer = await start_sim()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"http://127.0.0.1:{srv.port}/market/ws")
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(srv.stop())
        msg = await ws.receive(timeout=5)
        await stopping
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001


def test_process_takes_symbols_and_costs_from_the_app_configuration(tmp_path: Path) -> None:
    """Like the backtest: SYMBOLS and TAKER_FEE come from the environment / .env."""
    from perpbot.simulator.auth import sign
    from perpbot.simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET

    (tmp_path / ".env").write_text("SYMBOLS=DOGEUSDT\nTAKER_FEE=0.0004\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "perpbot.cli.main", "simulate", "--port", "0", "--days", "2", "--speed", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline()[len(LINE_PREFIX) :].split()[0])

        async def trade() -> tuple[list[str], dict[str, Any]]:
            base = f"http://127.0.0.1:{port}"
            h = {"X-MBX-APIKEY": DEFAULT_API_KEY}
            async with aiohttp.ClientSession(base_url=base) as http:
                async with http.get("/sim/state") as r:
                    symbols = (await r.json())["symbols"]
                q = f"symbol=DOGEUSDT&side=BUY&type=MARKET&quantity=100&timestamp={int(time.time() * 1000)}"
                async with http.post(
                    f"/fapi/v1/order?{q}&signature={sign(DEFAULT_API_SECRET, q)}", headers=h
                ):
                    pass
                q = f"symbol=DOGEUSDT&timestamp={int(time.time() * 1000)}"
                async with http.get(
                    f"/fapi/v1/userTrades?{q}&signature={sign(DEFAULT_API_SECRET, q)}", headers=h
                ) as r:
                    return symbols, (await r.json())[0]

        symbols, fill = asyncio.run(trade())
        assert symbols == ["DOGEUSDT"]
        assert float(fill["commission"]) == pytest.approx(float(fill["qty"]) * float(fill["price"]) * 0.0004)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
