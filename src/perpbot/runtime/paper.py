"""``perpbot paper``: the runtime, unchanged, against a ``perpbot simulate`` child process.

The simulator runs at ``--speed 0`` and the driver here advances it one candle at a time, in the
backtest's time order (``backtest/runner.py``, "Time order"), so that a paper replay can give the
backtest's trades exactly:

1. ``POST /sim/advance?bars=1``: candle T *happens* on the venue (fills, triggers, funding);
2. the replay clock is set to T's close; the driver waits until the market stream delivered
   every symbol's candle T and the user stream has gone quiet (T's events handled);
3. each traded symbol's candle T goes to its worker (the runtime's ordinary job); the driver
   waits until every worker is idle, or until nothing has happened for ``quiet_s`` (a bot waiting
   for a fill that only the next candle brings, as a market order fills at the next open);
4. every ``RECONCILE_EVERY_MS`` of replay time every bot reconciles (the backtest's cadence);
5. a symbol's last candle only closes positions (``END_OF_DATA``), as in the backtest.

The bots' clock is the replay clock (``ReplayClock``): journal stamps, the daily reset and the
kill switch follow replay time; waiting is real (events arrive over real sockets).

``--speed X`` > 0 paces the driver at X candles per second of wall time at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import CloseReason
from perpbot.simulator.child import SimulatorChild

T = TypeVar("T")
log = logging.getLogger(__name__)
BAR_MS = 15 * 60_000
RECONCILE_EVERY_MS = 300_000


class ReplayClock:
    """Replay time for the bots (set by the driver after each candle).

    Waiting follows ``SimClock``'s rule, so that paper takes the backtest's paths: a bot's
    ``wait_for`` (an event it waits for) ends with the event, or times out as soon as the driver
    finds the whole system quiet (``expire``: nothing more can arrive before the next candle), not
    after the real timeout. ``sleep`` (retry back-off) waits at most ``max_sleep_s`` of wall time:
    replay time does not pass while a bot sleeps, as in the backtest.
    """

    def __init__(self, start_ms: int = 0, *, max_sleep_s: float = 0.02) -> None:
        self._now = start_ms
        self.max_sleep_s = max_sleep_s
        self._waiting: set[asyncio.Future[None]] = set()
        self.expired = 0

    def set(self, now_ms: int) -> None:
        self._now = max(self._now, int(now_ms))

    def now_ms(self) -> int:
        return self._now

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def expire(self) -> None:
        """Time out every pending ``wait_for`` now."""
        for f in tuple(self._waiting):
            if not f.done():
                f.set_result(None)
                self.expired += 1

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(max(seconds, 0.0), self.max_sleep_s))

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        task = asyncio.ensure_future(awaitable)
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.add(gate)
        try:
            done, _ = await asyncio.wait({task, gate}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting.discard(gate)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise TimeoutError(f"replay timeout after {timeout}s")

    def scope(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


@dataclass(frozen=True, slots=True)
class PaperOptions:
    symbols: tuple[str, ...]
    correlation: tuple[str, str]
    data_dir: Path | None
    from_: str | None
    days: int
    balance: float = 1000.0
    speed: float = 0.0
    quiet_s: float = 0.3
    settle_s: float = 0.05


def start_simulator(opts: PaperOptions) -> SimulatorChild:
    """``perpbot simulate`` for this paper run: its symbols plus the correlation pair, replay
    window and balance, advanced only by the driver (``--speed 0``)."""
    syms = list(dict.fromkeys([*opts.symbols, *opts.correlation]))
    args = ["--symbols", ",".join(syms), "--days", str(opts.days), "--balance", repr(opts.balance)]
    if opts.data_dir is not None:
        args += ["--data-dir", str(opts.data_dir)]
    if opts.from_ is not None:
        args += ["--from", opts.from_]
    return SimulatorChild(args).start()


class PaperDriver:
    """Advances the simulator candle by candle and lets the runtime handle each (module doc)."""

    def __init__(self, runtime: Any, sim: SimulatorChild, clock: ReplayClock, opts: PaperOptions) -> None:
        self.rt = runtime
        self.sim = sim
        self.clock = clock
        self.opts = opts
        self._last_activity = time.monotonic()
        self.fills_seen = 0  # executions received over the user stream (the barrier below)
        self.steps = 0

        self.reconciles = 0

    async def _activity(self, ev: Any) -> None:
        self._last_activity = time.monotonic()
        if isinstance(ev, OrderTradeUpdate) and ev.execution_type in ("TRADE", "CALCULATED"):
            self.fills_seen += 1

    async def _fills_delivered(self, timeout_s: float = 30.0) -> None:
        """Barrier: every fill the venue made so far was delivered and handled by the bots (the
        backtest drains every event of candle T before any bot sees candle T)."""
        state = await self._call("GET", "/sim/state")
        want = int(state["fill_count"])
        end = time.monotonic() + timeout_s
        while self.fills_seen < want and time.monotonic() < end:
            await asyncio.sleep(0.002)

    async def _call(self, method: str, path: str) -> Any:
        return await asyncio.to_thread(self.sim.call, method, path)

    async def _quiet(self, extra: Callable[[], bool] = lambda: True, max_wait_s: float = 120.0) -> None:
        """Until ``extra()`` holds and no event arrived for ``settle_s``. A bot that waits on the
        clock while no event arrived for ``quiet_s`` waits for what only the next candle brings:
        its wait times out at once (``ReplayClock.expire``), as in the backtest. Nothing else ends
        the wait early (a slow REST call is waited for), except ``max_wait_s`` (logged)."""
        started = time.monotonic()
        while True:
            now = time.monotonic()
            idle_for = now - self._last_activity
            if extra() and idle_for >= self.opts.settle_s:
                return
            if idle_for >= self.opts.quiet_s and self.clock.waiting:
                self.clock.expire()
                self._last_activity = now
            if now - started > max_wait_s:
                log.warning("paper: the bots did not settle within %.0f s; going on", max_wait_s)
                return
            await asyncio.sleep(0.002)

    async def _settled(self, coro: Awaitable[Any]) -> None:
        """Run the driver's own bot call while watching for quiet, so that its waits time out
        the way the backtest's do instead of after their real timeouts."""
        task = asyncio.ensure_future(coro)
        await self._quiet(task.done)
        await task

    def _workers_idle(self) -> bool:
        return all(w._idle.is_set() for w in self.rt.workers.values()) and not any(
            b.has_background for b in self.rt.bots.values()
        )

    async def run(self, progress: Callable[[int, int], None] | None = None) -> None:
        rt = self.rt
        rt.exchange.subscribe(self._activity)
        state = await self._call("GET", "/sim/state")
        end_ms = int(state["end_ms"])
        next_reconcile: int | None = None
        total = (end_ms - int(state["next_candle_open_ms"])) // BAR_MS
        pace = 1.0 / self.opts.speed if self.opts.speed > 0 else 0.0
        while True:
            t0 = time.monotonic()
            res = await self._call("POST", "/sim/advance?bars=1")
            if int(res["advanced"]) == 0:
                break
            now = int(res["replay_time_ms"])
            open_ms = now - BAR_MS
            self.clock.set(now)
            self._last_activity = time.monotonic()
            streamed = [*rt.cfg.symbols, *rt.cfg.correlation.as_tuple()]
            while not all(rt.window.have(s, open_ms) for s in streamed):
                await asyncio.sleep(0.002)
            await self._fills_delivered()
            await self._quiet(self._workers_idle)
            last = bool(res["finished"])
            for sym in rt.cfg.symbols:
                if last:
                    continue
                rt.submit_candle(sym, open_ms)
            await self._quiet(self._workers_idle)
            if last:
                for bot in rt.bots.values():
                    if bot.in_position:
                        await self._settled(bot.close_position(CloseReason.END_OF_DATA))
                await self._fills_delivered()
                await self._quiet(self._workers_idle)
            if next_reconcile is None:
                next_reconcile = now
            if now >= next_reconcile:
                await self._settled(rt.reconcile_all())
                self.reconciles += 1
                next_reconcile = now - now % RECONCILE_EVERY_MS + RECONCILE_EVERY_MS
                await self._quiet(self._workers_idle)
            self.steps += 1
            if progress is not None:
                progress(self.steps, total)
            if last:
                break
            if pace:
                await asyncio.sleep(max(0.0, pace - (time.monotonic() - t0)))
