"""``perpbot simulate`` benchmark (issue 8 targets).

1. Signed MARKET order round trip through unmodified ccxt (``create_order``: HMAC signing, HTTP on
   loopback, auth + weights + engine + codec on the server, ccxt parsing), p50 / p99; target p50 <
   3 ms. Orders are paced (outside the timed span) to respect Binance's order limits, which the
   server enforces: ``--pace-ms 36`` (default, ~28 orders/s, both processes idle between orders,
   so a loaded machine adds its wake-up latency) or ``--pace-ms 0`` (bursts of 200 back to
   back). ccxt's own client-side throttle (50 ms per cost unit) is disabled
   (``enableRateLimit=False``): it is a sleep, not a round trip.
2. Replay of 3 symbols × 30 days (2 880 candles per symbol) at maximum speed with one market
   connection (the three ``@kline_15m`` streams) and one user-data connection open, nobody
   trading; target < 10 s. Timed from ``POST /sim/advance`` until the market client has received
   the last closed kline of every symbol.

The order round trip is measured twice: with the server in the client's process (one event loop:
the code path alone) and as a real ``perpbot simulate`` child process (as a user runs it; on a
loaded machine this adds the OS's cross-process wake-up latency). The replay uses the child
process. Both on the demo's synthetic market. Not a test:
``python bench/bench_simulate.py [--orders N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import ccxt.pro
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SYMBOLS = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")


def start_server(days: int) -> tuple[subprocess.Popen[str], str]:
    exe = Path(sys.executable).parent / "perpbot"
    proc = subprocess.Popen(
        [str(exe), "simulate", "--symbols", ",".join(SYMBOLS), "--days", str(days), "--speed", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    prefix = "perpbot simulate listening on "
    if not line.startswith(prefix):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line[len(prefix) :].split()[0]


def client(base: str, key: str, secret: str) -> ccxt.pro.binanceusdm:
    port = base.rsplit(":", 1)[1]
    return ccxt.pro.binanceusdm(
        {
            "apiKey": key,
            "secret": secret,
            "enableRateLimit": False,
            "urls": {
                "api": {
                    **{k: base + "/fapi/v1" for k in ("fapiPublic", "fapiPrivate")},
                    **{k: base + "/fapi/v2" for k in ("fapiPublicV2", "fapiPrivateV2")},
                    **{k: base + "/fapi/v3" for k in ("fapiPublicV3", "fapiPrivateV3")},
                    "fapiData": base + "/futures/data",
                    "ws": {"linear": f"ws://127.0.0.1:{port}/ws"},
                }
            },
            "options": {"fetchCurrencies": False},
        }
    )


async def order_round_trips(base: str, n: int, pace_ms: float) -> np.ndarray:
    from perpbot.simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET

    ex = client(base, DEFAULT_API_KEY, DEFAULT_API_SECRET)
    try:
        await ex.load_markets()
        out = np.empty(n)
        for i in range(n + 50):
            side = "buy" if i % 2 == 0 else "sell"
            t = time.perf_counter()
            await ex.create_order("XRP/USDT:USDT", "market", side, 10)
            if i >= 50:  # warm-up: connection pool, caches
                out[i - 50] = (time.perf_counter() - t) * 1000.0
            # Stay under Binance's order limits (300 / 10 s, 1200 / min) that the server enforces;
            # the pauses are outside the timed span.
            if pace_ms > 0:
                await asyncio.sleep(pace_ms / 1000.0)
            elif (i + 1) % 200 == 0:
                await asyncio.sleep(10.5)
        return out
    finally:
        await ex.close()


async def in_process_round_trips(n: int, days: int, pace_ms: float) -> np.ndarray:
    from perpbot.simulator.config import SimulatorConfig
    from perpbot.simulator.server import SimServer

    srv = SimServer(SimulatorConfig(symbols=SYMBOLS, days=days, speed=0.0))
    await srv.start()
    try:
        return await order_round_trips(f"http://127.0.0.1:{srv.port}", n, pace_ms)
    finally:
        await srv.stop()


async def replay(base: str) -> tuple[float, int, int]:
    from perpbot.simulator.config import DEFAULT_API_KEY

    async with aiohttp.ClientSession(base_url=base) as http:
        async with http.get("/sim/state") as r:
            state = await r.json()
        last_open = state["end_ms"] - 15 * 60_000
        bars = (state["end_ms"] - state["next_candle_open_ms"]) // (15 * 60_000)
        async with http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": DEFAULT_API_KEY}) as r:
            key = (await r.json())["listenKey"]
        streams = "/".join(f"{s.lower()}@kline_15m" for s in SYMBOLS)
        async with (
            http.ws_connect(f"/market/stream?streams={streams}") as mkt,
            http.ws_connect(f"/private/ws?listenKey={key}"),
        ):
            await asyncio.sleep(0.2)
            done: set[str] = set()
            frames = 0
            t = time.perf_counter()
            async with http.post(f"/sim/advance?bars={bars}") as r:
                assert (await r.json())["advanced"] == bars
            while len(done) < len(SYMBOLS):
                msg = await mkt.receive(timeout=60)
                frames += 1
                k = json.loads(msg.data)["data"]["k"]
                if k["x"] and k["t"] == last_open:
                    done.add(k["s"])
            return time.perf_counter() - t, bars, frames


def report(label: str, ms: np.ndarray) -> None:
    p50, p99 = np.percentile(ms, [50, 99])
    print(
        f"signed market order via ccxt, {label}: n={len(ms)} p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
        f"mean {statistics.fmean(ms):.2f} ms  (target p50 < 3 ms: {'met' if p50 < 3 else 'MISSED'})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=600)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument(
        "--pace-ms",
        type=float,
        default=36.0,
        help="pause between orders (36 ms ≈ 28 orders/s); 0 = back-to-back bursts of 200, 10.5 s apart",
    )
    args = ap.parse_args()
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpu(s), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    ms = asyncio.run(in_process_round_trips(args.orders, args.days, args.pace_ms))
    report(f"server in-process, pace {args.pace_ms:g} ms", ms)
    proc, base = start_server(args.days)
    try:
        ms = asyncio.run(order_round_trips(base, args.orders, args.pace_ms))
        report(f"server child process, pace {args.pace_ms:g} ms", ms)
    finally:
        proc.terminate()
        proc.wait(10)
    proc, base = start_server(args.days)
    try:
        secs, bars, frames = asyncio.run(replay(base))
        print(
            f"replay {len(SYMBOLS)} symbols x {args.days} days ({bars} candles each, {frames} kline frames "
            f"received): {secs:.2f} s  (target < 10 s: {'met' if secs < 10 else 'MISSED'})"
        )
    finally:
        proc.terminate()
        rc = proc.wait(10)
        assert rc == 0, f"server exit status {rc}"


if __name__ == "__main__":
    main()
