"""Two venues behind one interface, so that one contract suite runs against every adapter.

- ``SimVenue``: ``SimExchange`` in process over the simulator's own market and engine set-up.
- ``BinanceVenue``: ``BinanceExchange`` over real HTTP and WebSocket to a ``perpbot simulate``
  process started on a free port (REST through ccxt, events through the user stream).

Both start from the same synthetic market (same candles, same filters, same 1000 USDT), so the
same calls give the same answers; the tests assert what Binance guarantees, the same for both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from perpbot.domain.events import ExchangeEvent
from perpbot.exchange.binance.adapter import BinanceExchange
from perpbot.exchange.binance.budget import WeightBudget
from perpbot.exchange.binance.ccxt_client import Credentials
from perpbot.exchange.binance.environment import resolve_endpoints
from perpbot.exchange.binance.ws import StreamSettings
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.faults import FaultPlan
from perpbot.exchange.sim.settings import SimSettings
from perpbot.simulator.child import SimulatorChild
from perpbot.simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimulatorConfig
from perpbot.simulator.market import load_market_data
from perpbot.simulator.server import SimServer
from perpbot.simulator.venue import Venue

SYMBOLS = ("XRPUSDT", "TRXUSDT")
DAYS = 3
BAR_MS = 15 * 60_000


class SimVenue:
    """``SimExchange`` driven bar by bar like the simulator's replay."""

    name = "sim"

    def __init__(self, faults: FaultPlan | None = None, *, max_fill_qty: float = 0.0) -> None:
        cfg = SimulatorConfig(symbols=SYMBOLS, days=DAYS, max_fill_qty_per_execution=max_fill_qty)
        market = load_market_data(list(SYMBOLS), None, None, DAYS)
        self.venue = Venue.create(market, server_settings(cfg))
        self.ex = SimExchange(self.venue.engine, faults=faults)
        self.events: list[ExchangeEvent] = []
        self.ex.subscribe(self._on_event)
        self._cursor = market.start_ms

    async def _on_event(self, ev: ExchangeEvent) -> None:
        self.events.append(ev)

    async def start(self) -> None:
        await self.ex.start()

    async def advance(self, bars: int = 1) -> None:
        v = self.venue
        for _ in range(bars):
            for sym, series in v.market.series.items():
                i = series.index_at(self._cursor)
                if i >= 0:
                    self.ex.process_bar(sym, i - v.offsets[sym])
            self._cursor += BAR_MS
        await self.ex.drain()

    async def settle(self, until: Callable[[list[ExchangeEvent]], bool] | None = None) -> None:
        await self.ex.drain()

    async def price(self, symbol: str) -> float:
        return self.venue.engine.last_price(symbol)

    async def close(self) -> None:
        await self.ex.aclose()


def server_settings(cfg: SimulatorConfig) -> SimSettings:
    """The engine settings ``SimServer`` derives from its configuration (same costs, same fills)."""
    return SimSettings(
        initial_balance=cfg.balance,
        taker_fee=cfg.taker_fee,
        maker_fee=cfg.maker_fee,
        slippage_bps=cfg.slippage_bps,
        max_fill_qty_per_execution=cfg.max_fill_qty_per_execution,
    )


class InProcessSimulator:
    """The simulator's server class in this process, on a free port (for options the command
    line does not expose, such as split fills). Same ``http``/``ws`` interface as the process."""

    def __init__(self, **cfg: Any) -> None:
        self.server = SimServer(SimulatorConfig(symbols=SYMBOLS, days=DAYS, speed=0.0, **cfg))
        self.port = 0

    async def start(self) -> InProcessSimulator:
        self.port = await self.server.start()
        return self

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop()


class SimulatorProcess(SimulatorChild):
    """``perpbot simulate`` of the contract symbols and days as a child process on a free port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(["--symbols", ",".join(SYMBOLS), "--days", str(DAYS), *args], env=env)


class SimulatorPool:
    """Fresh simulators without waiting for their start-up: while a test uses one, the next one
    with the same options is already starting. Each test still gets a process nobody else used."""

    def __init__(self) -> None:
        self._spare: dict[tuple[str, ...], SimulatorProcess] = {}
        self._used: list[SimulatorProcess] = []

    def take(self, *args: str) -> SimulatorProcess:
        sim = self._spare.pop(args, None) or SimulatorProcess(*args).spawn()
        self._spare[args] = SimulatorProcess(*args).spawn()
        self._used.append(sim)
        return sim.wait_ready()

    def release(self, sim: SimulatorProcess) -> None:
        """SIGTERM now; the exit is collected at ``close`` (the test need not wait for it)."""
        sim.terminate()

    def close(self) -> None:
        for sim in [*self._used, *self._spare.values()]:
            sim.stop()
        self._used.clear()
        self._spare.clear()


class BinanceVenue:
    """``BinanceExchange`` against a ``perpbot simulate`` child process."""

    name = "binance"

    def __init__(
        self,
        sim: SimulatorProcess | InProcessSimulator,
        *,
        key: str = DEFAULT_API_KEY,
        secret: str = DEFAULT_API_SECRET,
        budget: WeightBudget | None = None,
        stream: StreamSettings | None = None,
        timeout_ms: int = 10_000,
        recv_window_ms: int = 2_000,
    ) -> None:
        self.sim = sim
        endpoints = resolve_endpoints("custom", sim.http, sim.ws)
        self.ex = BinanceExchange(
            endpoints,
            Credentials(key, secret),
            budget=budget or WeightBudget(),
            retry_delay_s=0.05,
            timeout_ms=timeout_ms,
            recv_window_ms=recv_window_ms,
        )
        self.events: list[ExchangeEvent] = []
        self.ex.subscribe(self._on_event)
        self.stream_settings = stream or StreamSettings(silence_s=600.0, backoff_s=0.05, backoff_max_s=0.5)
        self._http: aiohttp.ClientSession | None = None

    async def _on_event(self, ev: ExchangeEvent) -> None:
        self.events.append(ev)

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(base_url=self.sim.http)
        return self._http

    async def start(self) -> None:
        await self.ex.connect(list(SYMBOLS))
        await self.ex.start_user_stream(list(SYMBOLS), self.stream_settings)

    async def control(self, method: str, path: str, json_body: Any = None) -> Any:
        async with self.http.request(method, path, json=json_body) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def state(self) -> dict[str, Any]:
        return dict(await self.control("GET", "/sim/state"))

    async def inject(self, *faults: dict[str, Any]) -> None:
        await self.control("POST", "/sim/faults", list(faults))

    async def advance(self, bars: int = 1) -> None:
        await self.control("POST", f"/sim/advance?bars={bars}")
        await self.settle()

    async def settle(
        self, until: Callable[[list[ExchangeEvent]], bool] | None = None, timeout_s: float = 5.0
    ) -> None:
        """Wait until ``until(events)`` holds, or (without it) until no event came for 150 ms."""
        deadline = time.monotonic() + timeout_s
        seen, quiet_since = len(self.events), time.monotonic()
        while time.monotonic() < deadline:
            if until is not None and until(self.events):
                return
            await asyncio.sleep(0.02)
            if len(self.events) != seen:
                seen, quiet_since = len(self.events), time.monotonic()
            elif until is None and time.monotonic() - quiet_since >= 0.15:
                return
        if until is not None:
            raise AssertionError(f"condition not met within {timeout_s} s; events: {self.events}")

    async def price(self, symbol: str) -> float:
        async with self.http.get("/fapi/v1/premiumIndex", params={"symbol": symbol}) as r:
            return float((await r.json())["markPrice"])

    async def close(self) -> None:
        await self.ex.close()
        if self._http is not None:
            await self._http.close()


@pytest.fixture(scope="session")
def sim_pool() -> Iterator[SimulatorPool]:
    pool = SimulatorPool()
    yield pool
    pool.close()
