"""``perpbot paper``: the runtime, unchanged, against a ``perpbot simulate`` child process.

The simulator runs at ``--speed 0`` and the driver here advances it one candle at a time, in the
backtest's time order (``backtest/runner.py``, "Time order"), so that a paper replay can give the
backtest's trades exactly:

1. ``POST /sim/advance?bars=1``: candle T *happens* on the venue (fills, triggers, funding);
2. the replay clock is set to T's close; the driver waits until the market stream delivered
   every symbol's candle T and T's user-stream events were handled (``_settle``);
3. each traded symbol's candle T goes to its worker (the runtime's ordinary job); the driver
   waits until every worker is idle and every event the venue sent meanwhile was handled;
4. every ``RECONCILE_EVERY_MS`` of replay time every bot reconciles (the backtest's cadence);
5. a symbol's last candle only closes positions (``END_OF_DATA``), as in the backtest.

Waiting ends on counts, not on silence (``_settle``): the venue counts the user-stream events it
sent (``user_events``), the adapter counts the requests it started and has in flight and the
event frames it received and handled. When no request is in flight, no frame is being handled,
and every event the venue had sent after the last request was handled, nothing more can
arrive before the next candle: a bot still waiting on the clock (an entry's fills that only a
later candle brings) times out at once (``ReplayClock.expire``), as ``SimClock`` times out in
the backtest. Only when a count cannot be met (a fault dropped a frame) does the driver fall
back to silence: no counter moved for ``quiet_s``.

Request limits count on replay time paced by the wall clock on both sides (``--replay-limits``
and ``PacedReplayClock``): a replay packs days into minutes, so wall-clock minute windows would
throttle it (they cost 2.3 s per reconcile pass before), while each candle's requests fall into
that candle's replay minute, as they do live.

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

import aiohttp

from perpbot.aio import STOP_WAIT_S, cancel_and_wait
from perpbot.domain.types import CloseReason
from perpbot.simulator.child import SimulatorChild

T = TypeVar("T")
log = logging.getLogger(__name__)
BAR_MS = 15 * 60_000
RECONCILE_EVERY_MS = 300_000
POLL_S = 0.001  # how often the driver looks at the counters (the wait ends on the counts)


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
        await cancel_and_wait(task, STOP_WAIT_S)
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
    quiet_s: float = 0.3  # fallback only: no counter moved for this long (module docstring)
    max_wait_s: float = 120.0


def start_simulator(opts: PaperOptions) -> SimulatorChild:
    """``perpbot simulate`` for this paper run: its symbols plus the correlation pair, replay
    window and balance, advanced only by the driver (``--speed 0``)."""
    syms = list(dict.fromkeys([*opts.symbols, *opts.correlation]))
    args = ["--symbols", ",".join(syms), "--days", str(opts.days), "--balance", repr(opts.balance)]
    args.append("--replay-limits")
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
        self.steps = 0
        self.reconciles = 0
        self.state_reads = 0
        self.fallbacks = 0  # settles that ended on silence because a count was never met
        self._http: aiohttp.ClientSession | None = None
        self._sent = 0  # user-stream events the venue sent, as last read
        self._sent_writes = -1  # the adapter's write count when ``_sent`` was read

    async def _call(self, method: str, path: str) -> Any:
        """One control request on a kept-alive connection (several per candle)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60.0))
        async with self._http.request(method, self.sim.http + path) as r:
            r.raise_for_status()
            return await r.json()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _settle(self, extra: Callable[[], bool] = lambda: True) -> None:
        """Until every request was answered, every user-stream event the venue sent after the
        last request that could change the account (a write) was handled, no bot waits on the
        clock, every worker is idle and ``extra()`` holds (module docstring). The venue's event
        count is read again only after a write: reads change nothing on the venue, and the
        answer of ``/sim/advance`` carries the count, so a quiet candle costs no extra request."""
        rest, us = self.rt.exchange.rest, self.rt.user_stream
        moved_at = started = time.monotonic()
        mark: tuple[int, ...] = ()
        while True:
            io_idle = rest.in_flight == 0 and us.frames_received == us.frames_handled
            if io_idle and rest.writes != self._sent_writes:
                self._sent_writes = rest.writes
                self._sent = int((await self._call("GET", "/sim/state?brief=1"))["user_events"])
                self.state_reads += 1
                continue
            delivered = io_idle and rest.writes == self._sent_writes and us.frames_handled >= self._sent
            now = time.monotonic()
            new_mark = (rest.writes, rest.in_flight, us.frames_handled, self.clock.waiting)
            if new_mark != mark:
                mark, moved_at = new_mark, now
            elif not delivered and now - moved_at >= self.opts.quiet_s:
                delivered = True  # a count that cannot be met (a dropped frame): silence decides
                self.fallbacks += 1
                moved_at = now
            if delivered:
                if self.clock.waiting:
                    self.clock.expire()  # nothing more can arrive before the next candle
                    await asyncio.sleep(0)
                    continue
                if extra() and self._workers_idle():
                    return
            if now - started > self.opts.max_wait_s:
                log.warning("paper: the bots did not settle within %.0f s; going on", self.opts.max_wait_s)
                return
            await asyncio.sleep(POLL_S)

    async def _settled(self, coro: Awaitable[Any]) -> None:
        """Run the driver's own bot call while settling, so that its waits time out the way the
        backtest's do instead of after their real timeouts."""
        task = asyncio.ensure_future(coro)
        await self._settle(task.done)
        await task

    def _workers_idle(self) -> bool:
        return all(w._idle.is_set() for w in self.rt.workers.values()) and not any(
            b.has_background for b in self.rt.bots.values()
        )

    async def _candles_streamed(self, open_ms: int) -> None:
        """Every streamed symbol's candle ``open_ms`` is in the window (the market stream)."""
        rt = self.rt
        streamed = [*rt.cfg.symbols, *rt.cfg.correlation.as_tuple()]
        while not all(rt.window.have(s, open_ms) for s in streamed):
            await asyncio.sleep(POLL_S)

    async def run(self, progress: Callable[[int, int], None] | None = None) -> None:
        rt = self.rt
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
            if self.rt.exchange.rest.writes == self._sent_writes:
                self._sent = int(res["user_events"])  # no write since: the count is current
            await self._candles_streamed(open_ms)
            await self._settle()
            last = bool(res["finished"])
            if not last:
                # One symbol at a time, in configured order, as the backtest hands them to the
                # bots: an entry sizes from the balance the previous symbol's entry left.
                for sym in rt.cfg.symbols:
                    rt.submit_candle(sym, open_ms)
                    await self._settle()
            else:
                for bot in rt.bots.values():
                    if bot.in_position:
                        await self._settled(bot.close_position(CloseReason.END_OF_DATA))
                await self._settle()
            if next_reconcile is None:
                next_reconcile = now
            if now >= next_reconcile:
                await self._settled(rt.reconcile_all())
                self.reconciles += 1
                next_reconcile = now - now % RECONCILE_EVERY_MS + RECONCILE_EVERY_MS
                await self._settle()
            self.steps += 1
            if progress is not None:
                progress(self.steps, total)
            if last:
                break
            if pace:
                await asyncio.sleep(max(0.0, pace - (time.monotonic() - t0)))
