"""Injected clocks: the only source of time for bots and the risk manager.

``LiveClock`` reads the wall clock; ``SimClock`` is set by the backtester to each candle's close
time, so that the same code runs identically and deterministically over recorded data.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        """Like ``asyncio.wait_for``; raises ``TimeoutError`` on timeout."""
        ...


class LiveClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        return await asyncio.wait_for(awaitable, timeout)


class SimClock:
    """Simulated time. ``sleep`` advances it without waiting; ``wait_for`` lets pending callbacks
    run (a bounded number of event-loop turns) and then times out at once, advancing the clock by
    the timeout, so a missing event costs nothing in wall time and the outcome is deterministic."""

    _SPINS = 20

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def set(self, now_ms: int) -> None:
        if now_ms < self._now:
            raise ValueError(f"SimClock cannot go back from {self._now} to {now_ms}")
        self._now = now_ms

    async def sleep(self, seconds: float) -> None:
        self._now += int(seconds * 1000)
        await asyncio.sleep(0)

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        task = asyncio.ensure_future(awaitable)
        for _ in range(self._SPINS):
            if task.done():
                return task.result()
            await asyncio.sleep(0)
        if task.done():
            return task.result()
        task.cancel()
        self._now += int(timeout * 1000)
        raise TimeoutError(f"simulated timeout after {timeout}s")
