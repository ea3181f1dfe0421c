"""A ``perpbot simulate`` child process per test and a connected ``BinanceExchange`` on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.contract.harness import BinanceVenue, SimulatorProcess


@pytest.fixture
async def start_venue() -> AsyncIterator[Callable[..., Any]]:
    """``await start_venue(*simulate_args, **venue_kwargs)``; everything is stopped afterwards."""
    sims: list[SimulatorProcess] = []
    venues: list[BinanceVenue] = []

    async def start(
        *args: str, sim: SimulatorProcess | None = None, connect: bool = True, **kw: Any
    ) -> BinanceVenue:
        if sim is None:
            sim = SimulatorProcess(*args).start()
            sims.append(sim)
        v = BinanceVenue(sim, **kw)
        venues.append(v)
        if connect:
            await v.start()
        return v

    yield start
    for v in venues:
        await v.close()
    for s in sims:
        s.stop()
