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

Priorities only order the jobs queued at a hand-over. A deciding job is out of the lane while its
position read is out, so a HOLD candle's bookkeeping (its OI/funding requests and z-scores, ~2 ms)
took the free lane then, and the position answer sat in the socket behind it. So a decision is
also *open* from its signal until its ``on_candle`` returns (the entry order and its stop-loss and
take-profit), and bookkeeping waits for every open decision (``after_decisions``), bounded by
``BOOKKEEPING_WAIT_MAX_S`` so that a decision stuck in retries never starves the other symbols.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

DECIDE = 0  # a candle with a signal: its reads, features and context until ``on_candle``
ROUTINE = 1  # a candle whose signal is not known yet (the indicators)
BOOKKEEPING = 2  # a HOLD candle's remaining features, and what no decision waits for
# The longest bookkeeping waits for open decisions: far above an entry's round trips (~10 ms),
# far below a bar, so a decision stuck in timeouts delays the others' bookkeeping, never stops it.
BOOKKEEPING_WAIT_MAX_S = 1.0


class Lane:
    """A priority lock (lowest class first, then arrival order)."""

    def __init__(self) -> None:
        self._held = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._deciding = 0
        self._no_decision = asyncio.Event()
        self._no_decision.set()

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

    @property
    def deciding(self) -> int:
        """Decisions open: a signal found, its ``on_candle`` not returned yet."""
        return self._deciding

    def open_decision(self) -> None:
        self._deciding += 1
        self._no_decision.clear()

    def close_decision(self) -> None:
        self._deciding -= 1
        if self._deciding <= 0:
            self._deciding = 0
            self._no_decision.set()

    async def after_decisions(self, max_wait_s: float = BOOKKEEPING_WAIT_MAX_S) -> None:
        """Return once no decision is open, or after ``max_wait_s`` at the latest."""
        if self._deciding:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._no_decision.wait(), max_wait_s)

    @asynccontextmanager
    async def turn(self, priority: int) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()
