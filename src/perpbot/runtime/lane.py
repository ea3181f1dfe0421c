"""The candle jobs' CPU, one job at a time, a decision's work before bookkeeping.

Why: every symbol's candle job runs on one event loop. A close brings every symbol's job at
once; left to asyncio's round robin, each job's steps (indicators ~1 ms, request building
~0.5 ms per REST call, z-scores ~1 ms) interleave with the others', so the first symbol's entry
order waits for every other symbol's features, HOLD candles included. The lane lets one job
compute at a time and gives the next turn to the most urgent waiter (``DECIDE`` before
``ROUTINE`` before ``BOOKKEEPING``), first come first served within a class. A job leaves the lane
while it waits for anything outside the process (BTC/ETH klines, REST answers, the bot's own
order round trips), so the lane never holds a job behind I/O, and it never changes what a job
decides: only when its CPU runs (docs/ARCHITECTURE.md, "Decision latency").
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

DECIDE = 0  # a candle with a signal: its reads, features and context until ``on_candle``
ROUTINE = 1  # a candle whose signal is not known yet (the indicators)
BOOKKEEPING = 2  # a HOLD candle's remaining features, and what no decision waits for


class Lane:
    """A priority lock (lowest class first, then arrival order)."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def held(self) -> bool:
        return self._held

    async def acquire(self, priority: int) -> None:
        if not self._held and not self._waiting:
            self._held = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed the lane as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)  # the lane passes to it, still held
                return
        self._held = False

    @asynccontextmanager
    async def turn(self, priority: int) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
