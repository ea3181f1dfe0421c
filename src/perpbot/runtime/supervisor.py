"""One supervised worker task per symbol: isolation and restart (issue 10 §1).

Why a queue per symbol: the market stream delivers every symbol's candles on one socket, in
arrival order. Handing each candle to its own symbol's queue means a bot that is slow (an entry
waiting for its fills) or broken never delays another symbol's decision.

Two levels of protection:
- an exception raised while one job (a candle) is handled is logged, alerted and counted; the
  worker takes the next job (the bot goes on);
- if the worker task itself dies (anything escaping the per-job guard), the supervisor restarts
  it after an exponential back-off (``backoff_s`` doubling up to ``backoff_max_s``) and alerts.
  Jobs queued meanwhile wait in the queue: nothing is lost, and no other symbol notices.

A ``CancelledError`` that a job raises while nobody cancelled the worker (a cancelled future deep
in a library) is a job error like any other: letting it through once ended the worker task as
"cancelled", which the supervisor took for its own cancellation and returned, leaving the queued
jobs unhandled and ``join`` (and with it a graceful stop) waiting forever (brief h15hang).

A graceful stop drains with a bound (``stop(drain_s=...)``): a live process must stop on SIGTERM
even when a job is stuck. What is still in flight after the bound is cancelled and logged; the
protective orders stay on the exchange and the next start-up verifies them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from perpbot.aio import cancel_and_wait
from perpbot.engine.notifier import alert_message, bot_restart_message

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
AlertFn = Callable[[str, str], Awaitable[None]]
CANCEL_WAIT_S = 10.0  # a cancelled job's own clean-up (finally blocks) gets this long at stop


@dataclass(slots=True)
class WorkerStats:
    jobs: int = 0
    job_errors: int = 0
    restarts: int = 0
    last_error: str = ""
    restart_times: list[float] = field(default_factory=list)


class SymbolWorker:
    """Runs ``symbol``'s jobs one at a time, in order, under supervision."""

    def __init__(
        self,
        symbol: str,
        alert: AlertFn,
        *,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        loop_hook: Callable[[], None] | None = None,
    ) -> None:
        self.symbol = symbol
        self._alert = alert
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending = 0
        self._stopping = False
        self.stats = WorkerStats()
        # Test seam: called at the top of every loop turn, outside the per-job guard, so a test
        # can make the worker task itself die (a bug in the loop, not in a job).
        self._loop_hook = loop_hook

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(
                self._supervise(), name=f"supervise-{self.symbol}"
            )

    def submit(self, job: Job) -> None:
        """Queue one job; refused (dropped with a log line) once stopping began."""
        if self._stopping:
            log.info("%s: job dropped, the runtime is stopping", self.symbol)
            return
        self._pending += 1
        self._idle.clear()
        self._queue.put_nowait(job)

    async def join(self) -> None:
        """Wait until every queued job was handled."""
        await self._idle.wait()

    @property
    def pending(self) -> int:
        """Jobs queued or in flight."""
        return self._pending

    async def stop(self, *, drain: bool = True, drain_s: float | None = None) -> int:
        """Stop taking jobs; with ``drain`` let the queued and in-flight ones finish first, for at
        most ``drain_s`` seconds (None: no bound). Returns how many jobs were abandoned (queued or
        in flight when the bound ran out, or when not draining); the in-flight one is cancelled."""
        self._stopping = True
        if drain and self._supervisor is not None and self._pending:
            try:
                await asyncio.wait_for(self._idle.wait(), drain_s)
            except TimeoutError:
                log.error(
                    "%s: %d job(s) still queued or in flight after %.0f s of drain; cancelled "
                    "(protective orders stay on the exchange)",
                    self.symbol,
                    self._pending,
                    drain_s,
                )
        abandoned = self._pending
        sup, self._supervisor = self._supervisor, None
        if sup is not None:
            sup.cancel()  # once: it cancels its worker task itself, as often as needed
            done, _ = await asyncio.wait({sup}, timeout=CANCEL_WAIT_S + 1.0)
            if not done:
                log.error(
                    "%s: the worker did not end within %.0f s of its cancellation", self.symbol, CANCEL_WAIT_S
                )
        while not self._queue.empty():  # what was never started will never be: nobody waits on it
            self._queue.get_nowait()
        self._pending = 0
        self._idle.set()
        return abandoned

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    # ------------------------------------------------------------------ internals

    async def _supervise(self) -> None:
        delay = self.backoff_s
        while True:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"bot-{self.symbol}")
            try:
                await asyncio.shield(self._task)
            except asyncio.CancelledError as exc:
                if not _being_cancelled() and self._task.done():
                    # Not our cancellation: the worker task itself ended cancelled (a bug in the
                    # loop). Restart it like any death, or the queued jobs would wait forever.
                    await self._restart(exc, delay)
                    delay = min(delay * 2, self.backoff_max_s)
                    continue
                await cancel_and_wait(self._task, CANCEL_WAIT_S)  # again if 3.11 loses it
                raise
            except Exception as exc:  # the worker task died: restart with back-off
                await self._restart(exc, delay)
                delay = min(delay * 2, self.backoff_max_s)
            else:
                return

    async def _restart(self, exc: BaseException, delay: float) -> None:
        """Count, log and alert a dead worker task, then wait ``delay`` before the next one."""
        self.stats.restarts += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.error("%s: bot task died (%s); restart in %.1f s", self.symbol, self.stats.last_error, delay)
        await self._safe_alert("alert", bot_restart_message(self.symbol, self.stats.last_error, delay))
        await asyncio.sleep(delay)
        self.stats.restart_times.append(asyncio.get_running_loop().time())

    async def _run(self) -> None:
        while True:
            if self._loop_hook is not None:
                self._loop_hook()
            job = await self._queue.get()
            if job is None:
                return
            try:
                await job()
            except asyncio.CancelledError as exc:
                if _being_cancelled():
                    raise
                await self._job_failed(exc)  # a stray cancellation from inside the job
            except Exception as exc:
                await self._job_failed(exc)
            finally:
                self.stats.jobs += 1
                self._pending = max(self._pending - 1, 0)  # 0 already after a stop's cancel
                if self._pending == 0:
                    self._idle.set()

    async def _job_failed(self, exc: BaseException) -> None:
        self.stats.job_errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.error("%s: error while handling a candle", self.symbol, exc_info=exc)
        await self._safe_alert(
            "alert", alert_message(self.symbol, f"error while handling a candle ({self.stats.last_error})")
        )

    async def _safe_alert(self, kind: str, text: str) -> None:
        try:
            await self._alert(kind, text)
        except Exception:  # an alert must never take the bot down
            log.exception("%s: alert failed", self.symbol)


def _being_cancelled() -> bool:
    """The current task was asked to stop (``Task.cancelling``), as opposed to a
    ``CancelledError`` coming out of something it awaited."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def settle_background(bots: dict[str, Any], limit_s: float) -> list[str]:
    """Wait (at most ``limit_s``) for the bots' background work: re-placement of a lost SL/TP,
    the adoption and protection of a late entry fill. A graceful stop must let it finish, as it
    lets the candle jobs finish: ``SymbolBot.stop`` cancels it, which left a position without
    its stop-loss on the exchange after exit. The symbols whose work was still running at the
    bound (it is then cancelled by the caller's ``stop``)."""
    waits = {s: asyncio.ensure_future(b.wait_background()) for s, b in bots.items() if b.has_background}
    if not waits:
        return []
    _, pending = await asyncio.wait(waits.values(), timeout=limit_s)
    for fut in pending:
        fut.cancel()
    return [s for s, fut in waits.items() if fut in pending]


def describe(workers: dict[str, SymbolWorker]) -> dict[str, Any]:
    """Per symbol: alive, jobs, errors, restarts (the heartbeat and ``status`` read this)."""
    return {
        s: {
            "alive": w.alive,
            "jobs": w.stats.jobs,
            "errors": w.stats.job_errors,
            "restarts": w.stats.restarts,
        }
        for s, w in workers.items()
    }
