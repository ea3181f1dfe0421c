"""The ``venue`` fixture: every contract test runs once per adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.contract.harness import BinanceVenue, SimulatorPool, SimVenue, sim_pool

__all__ = ["sim_pool"]


@pytest.fixture(params=["sim", "binance"])
async def venue(
    request: pytest.FixtureRequest, sim_pool: SimulatorPool
) -> AsyncIterator[SimVenue | BinanceVenue]:
    if request.param == "sim":
        v: SimVenue | BinanceVenue = SimVenue()
        await v.start()
        yield v
        await v.close()
        return
    sim = sim_pool.take()
    b = BinanceVenue(sim)
    try:
        await b.start()
        yield b
    finally:
        await b.close()
        sim_pool.release(sim)
