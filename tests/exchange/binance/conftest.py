"""A fresh ``perpbot simulate`` child process per test and ``BinanceExchange`` venues on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.contract.harness import BinanceVenue, SimulatorPool, SimulatorProcess, sim_pool

__all__ = ["sim_pool"]


@pytest.fixture
async def start_venue(sim_pool: SimulatorPool) -> AsyncIterator[Callable[..., Any]]:
    """``await start_venue(*simulate_args, sim=None, connect=True, **venue_kwargs)``."""
    sims: list[SimulatorProcess] = []
    venues: list[BinanceVenue] = []

    async def start(
        *args: str, sim: SimulatorProcess | None = None, connect: bool = True, **kw: Any
    ) -> BinanceVenue:
        if sim is None:
            sim = sim_pool.take(*args)
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
        sim_pool.release(s)
