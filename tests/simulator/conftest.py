"""Fixtures: a real simulator on a real loopback socket (port 0) and unmodified ccxt clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import ccxt.pro
import pytest

from perpbot.simulator.config import SimulatorConfig
from perpbot.simulator.server import SimServer

SYMBOLS = ("XRPUSDT", "TRXUSDT")


def make_config(**kw: Any) -> SimulatorConfig:
    base: dict[str, Any] = {"symbols": SYMBOLS, "days": 3, "speed": 0.0}
    base.update(kw)
    return SimulatorConfig(**base)


def ccxt_client(srv: SimServer, **options: Any) -> ccxt.pro.binanceusdm:
    """ccxt pointed at the simulator exactly as the reference (§9) shows; nothing patched."""
    h = f"http://127.0.0.1:{srv.port}"
    return ccxt.pro.binanceusdm(
        {
            "apiKey": srv.cfg.api_key,
            "secret": srv.cfg.api_secret,
            "urls": {
                "api": {
                    "fapiPublic": h + "/fapi/v1",
                    "fapiPublicV2": h + "/fapi/v2",
                    "fapiPublicV3": h + "/fapi/v3",
                    "fapiPrivate": h + "/fapi/v1",
                    "fapiPrivateV2": h + "/fapi/v2",
                    "fapiPrivateV3": h + "/fapi/v3",
                    "fapiData": h + "/futures/data",
                    "public": h + "/api/v3",
                    "private": h + "/api/v3",
                    "sapi": h + "/sapi/v1",
                    "ws": {"linear": f"ws://127.0.0.1:{srv.port}/ws"},
                }
            },
            "options": {"fetchCurrencies": False, **options},
        }
    )


@pytest.fixture
async def start_sim() -> AsyncIterator[Callable[..., Any]]:
    started: list[SimServer] = []

    async def start(wall_ms: Callable[[], int] | None = None, **kw: Any) -> SimServer:
        srv = SimServer(make_config(**kw), **({"wall_ms": wall_ms} if wall_ms else {}))
        await srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.stop()


@pytest.fixture
async def sim(start_sim: Callable[..., Any]) -> SimServer:
    return await start_sim()


@pytest.fixture
async def ex(sim: SimServer) -> AsyncIterator[ccxt.pro.binanceusdm]:
    client = ccxt_client(sim)
    yield client
    await client.close()


@pytest.fixture
async def http(sim: SimServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{sim.port}") as s:
        yield s


def signed_query(srv: SimServer, params: dict[str, Any]) -> str:
    """A query string signed the way Binance documents it (timestamp from the server's clock)."""
    from urllib.parse import urlencode

    from perpbot.simulator.auth import sign

    q = urlencode({**params, "timestamp": srv.server_ms()})
    return f"{q}&signature={sign(srv.cfg.api_secret, q)}"
