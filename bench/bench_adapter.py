"""Live-adapter benchmark (issue 9 targets).

1. ``kline``: a closed-kline WebSocket message (JSON text, Binance's combined framing) received →
   the domain ``Candle`` handed to the runtime's callback, through ``KlineFeed``'s real frame path
   (JSON decode, duplicate/gap checks, latest-price view). p50/p99 over N messages; target p99
   < 1 ms.
2. ``entry``: a market entry with its stop-loss and take-profit placed through ``BinanceExchange``
   (ccxt signing, the weight budget, three REST round trips: order, algo SL, algo TP) against a
   ``perpbot simulate`` child process on loopback. p50/p99 over N entries (each closed again
   untimed); target p50 < 15 ms.

Not a test: ``python bench/bench_adapter.py [--klines N] [--entries N]``. The machine's load is
printed with the figures; other processes on a shared box inflate both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perpbot.domain.types import OrderSide, OrderType  # noqa: E402
from perpbot.exchange.binance.adapter import BinanceExchange  # noqa: E402
from perpbot.exchange.binance.budget import WeightBudget  # noqa: E402
from perpbot.exchange.binance.ccxt_client import Credentials  # noqa: E402
from perpbot.exchange.binance.codec.market import kline_event  # noqa: E402
from perpbot.exchange.binance.environment import resolve_endpoints  # noqa: E402
from perpbot.exchange.binance.market_stream import BAR_MS, Candle, KlineFeed  # noqa: E402
from perpbot.simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET  # noqa: E402
from tests.contract.harness import SimulatorProcess  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def bench_kline(n: int) -> dict[str, float]:
    t0 = 1_736_294_400_000
    texts = [
        json.dumps(
            {
                "stream": "xrpusdt@kline_15m",
                "data": kline_event(
                    "XRPUSDT",
                    "15m",
                    t0 + (i + 1) * BAR_MS,
                    t0 + i * BAR_MS,
                    (1.0, 1.1, 0.9, 1.05, 1e6),
                    True,
                    BAR_MS,
                ),
            }
        )
        for i in range(n)
    ]
    done: list[int] = []

    async def on_candle(c: Candle) -> None:
        done.append(time.perf_counter_ns())

    async def no_rest(symbol: str, start: int | None, limit: int) -> list[list[object]]:
        raise AssertionError("no gap, no REST")

    feed = KlineFeed(resolve_endpoints("live"), ["XRPUSDT"], no_rest, on_candle, server_ms=lambda: 2**62)
    feed.last_open["XRPUSDT"] = t0 - BAR_MS
    lat: list[float] = []
    for text in texts:
        start = time.perf_counter_ns()
        await feed._on_frame(json.loads(text))  # what ResilientSocket does with a TEXT frame
        lat.append((done[-1] - start) / 1e6)
    assert feed.delivered == n
    return {"n": n, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": max(lat)}


async def bench_entry(n: int) -> dict[str, float]:
    sim = SimulatorProcess().start()
    ex = BinanceExchange(
        resolve_endpoints("custom", sim.http, sim.ws),
        Credentials(DEFAULT_API_KEY, DEFAULT_API_SECRET),
        budget=WeightBudget(),
    )
    lat: list[float] = []
    try:
        await ex.connect(["XRPUSDT"])
        price = (await ex.klines("XRPUSDT", "15m", limit=1))[-1][4]
        p = float(str(price))
        for i in range(n):
            t = time.perf_counter()
            await ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id=f"b-in-{i}")
            await ex.place_conditional(
                "XRPUSDT",
                OrderType.STOP_MARKET,
                OrderSide.SELL,
                100.0,
                round(p * 0.8, 4),
                client_algo_id=f"b-sl-{i}",
            )
            await ex.place_conditional(
                "XRPUSDT",
                OrderType.TAKE_PROFIT_MARKET,
                OrderSide.SELL,
                100.0,
                round(p * 1.2, 4),
                client_algo_id=f"b-tp-{i}",
            )
            lat.append((time.perf_counter() - t) * 1000)
            await ex.cancel_all_conditional("XRPUSDT")
            await ex.market_order(
                "XRPUSDT", OrderSide.SELL, 100.0, reduce_only=True, client_order_id=f"b-out-{i}"
            )
            await asyncio.sleep(0.05)  # stay under Binance's 300 orders / 10 s
    finally:
        await ex.close()
        sim.stop()
    return {"n": n, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": max(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--klines", type=int, default=20_000)
    ap.add_argument("--entries", type=int, default=60)
    args = ap.parse_args()
    k = asyncio.run(bench_kline(args.klines))
    print(
        f"kline→candle  n={k['n']}  p50 {k['p50_ms']:.4f} ms  p99 {k['p99_ms']:.4f} ms  "
        f"max {k['max_ms']:.3f} ms  (target p99 < 1 ms)"
    )
    e = asyncio.run(bench_entry(args.entries))
    print(
        f"entry+SL+TP   n={e['n']}  p50 {e['p50_ms']:.2f} ms  p99 {e['p99_ms']:.2f} ms  "
        f"max {e['max_ms']:.2f} ms  (target p50 < 15 ms)"
    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
