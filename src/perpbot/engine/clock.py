"""Injected clocks: the only source of time for bots and the risk manager.

``LiveClock`` reads the wall clock; ``SimClock`` is set by the backtester to each candle's close
time, so that the same code runs identically and deterministically over recorded data.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
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

    def scope(self) -> contextlib.AbstractContextManager[None]:
        """A stretch of one bot's work whose waiting must not move anyone else's time (defect 18).

        A live clock needs nothing here (real time passes for everyone alike); a simulated
        clock keeps the time a bot spends sleeping or timing out inside the scope to itself.
        """
        ...


class LiveClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        return await asyncio.wait_for(awaitable, timeout)

    def scope(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class SimClock:
    """Simulated time. ``sleep`` advances it without waiting; ``wait_for`` lets pending callbacks
    run (a bounded number of event-loop turns) and then times out at once, advancing the clock by
    the timeout, so a missing event costs nothing in wall time and the outcome is deterministic.

    Whose time advances (issue 7 defect 18): the runner sets the *shared* time (``set``, each
    candle's close); what a sleep or a timeout adds is *local* to the asyncio context that waited
    (a ``ContextVar``), and only until the shared time is set again. Inside ``scope()`` (a bot's
    candle, reconciliation or close) the local part starts from zero and is dropped on exit, so
    one bot's protective-order retries never stamp the next symbol's entry of the same candle
    late. Tasks copy their creator's context, so a background task started by a bot inherits the
    bot's local time at that moment and advances only its own.
    """

    _SPINS = 20

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms
        # (shared time the offset was taken at, offset ms); an offset taken at another shared
        # time is stale and ignored.
        self._local: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar(
            f"simclock_local_{id(self)}", default=(-1, 0)
        )

    def now_ms(self) -> int:
        base, off = self._local.get()
        return self._now + off if base == self._now else self._now

    def set(self, now_ms: int) -> None:
        if now_ms < self._now:
            raise ValueError(f"SimClock cannot go back from {self._now} to {now_ms}")
        self._now = now_ms

    def _advance(self, ms: int) -> None:
        base, off = self._local.get()
        self._local.set((self._now, (off if base == self._now else 0) + ms))

    def scope(self) -> contextlib.AbstractContextManager[None]:
        return _LocalScope(self._local)

    async def sleep(self, seconds: float) -> None:
        self._advance(int(seconds * 1000))
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
        self._advance(int(timeout * 1000))
        raise TimeoutError(f"simulated timeout after {timeout}s")


class _LocalScope:
    """``SimClock.scope()``: local time starts from zero inside, the outer value is restored
    on exit (a plain class: this runs for every candle with a signal and every reconcile)."""

    __slots__ = ("_token", "_var")

    def __init__(self, var: contextvars.ContextVar[tuple[int, int]]) -> None:
        self._var = var
        self._token: contextvars.Token[tuple[int, int]] | None = None

    def __enter__(self) -> None:
        self._token = self._var.set((-1, 0))

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            self._var.reset(self._token)
