"""Periodic work of the runtime (issue 10 §1): reconcile, position monitor, midnight reset,
heartbeat. Each runs as its own task; an exception in one pass is logged and the next pass
happens as scheduled (a failing REST call must not end reconciliation for the day).

Times come from the injected clock (``now_ms``) so the midnight reset follows replay time in
paper mode; the waiting itself is wall time (``asyncio.sleep``), bounded by ``tick_s``.

A graceful stop lets a pass in flight finish (``wind_down``) before the tasks are cancelled: a
reconciliation pass may be re-placing a position's lost stop-loss, and cancelling it left the
position without one on the exchange after exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

DAY_MS = 86_400_000


@dataclass(slots=True)
class Every:
    """Run ``job`` every ``period_s`` of the clock's time (checked every ``tick_s`` of wall time)."""

    name: str
    period_s: float
    job: Callable[[], Awaitable[None]]
    passes: int = 0
    failures: int = 0
    busy: bool = False  # a pass is running
    closing: bool = False  # no new pass (``wind_down``)

    async def run(self, now_ms: Callable[[], int], tick_s: float) -> None:
        period_ms = int(self.period_s * 1000)
        due = now_ms() - now_ms() % period_ms + period_ms
        while True:
            await asyncio.sleep(tick_s)
            if self.closing:
                return
            if now_ms() < due:
                continue
            await self.once()
            now = now_ms()
            due = now - now % period_ms + period_ms

    async def once(self) -> None:
        self.busy = True
        try:
            await self.job()
            self.passes += 1
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failures += 1
            log.exception("periodic %s failed; next pass as scheduled", self.name)
        finally:
            self.busy = False


async def wind_down(jobs: Iterable[Every], limit_s: float) -> list[str]:
    """No new pass of ``jobs``; wait (at most ``limit_s``) for the passes in flight. The names
    of those still running at the bound (the caller then cancels them)."""
    jobs = list(jobs)
    for j in jobs:
        j.closing = True
    end = asyncio.get_running_loop().time() + limit_s
    while any(j.busy for j in jobs) and asyncio.get_running_loop().time() < end:
        await asyncio.sleep(0.05)
    return [j.name for j in jobs if j.busy]


@dataclass(slots=True)
class Midnight:
    """The risk manager's reset at 00:00 UTC of the clock's day (SPEC §9, §13)."""

    job: Callable[[], Awaitable[None]]
    resets: int = 0

    async def run(self, now_ms: Callable[[], int], tick_s: float) -> None:
        day = now_ms() // DAY_MS
        while True:
            await asyncio.sleep(tick_s)
            today = now_ms() // DAY_MS
            if today != day:
                day = today
                try:
                    await self.job()
                    self.resets += 1
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("midnight reset failed")
