"""Render the report's charts in forked worker processes, started before the backtest runs.

Why (issue 13, whole process in about 1.5 s): importing matplotlib and plotly and drawing the
first chart costs more than the backtest loop, and the loop uses one core. So ``perpbot
backtest`` forks one worker before its command line is even parsed (``start_early``); while the
parent parses, loads and runs the loop, the worker imports the plotting libraries, draws a tiny
chart of each HTML kind (plotly's template and bundle are then loaded, ``worker_inbox``), builds
the PNGs' figures and axes (``figure_stash``), each step stopped as soon as the real jobs wait.
When the run is done the parent sends the chart jobs (``chart_jobs``: plain arrays and JSON, no
pickle); the worker forks itself once per further usable core (warm children, nothing imported
twice), each process pulls the next job, costliest first, from one shared queue
(``_render_batch``) and writes its files atomically. The parent never imports matplotlib or plotly.

Fail-safe: with no ``fork`` (or threads already running in the parent, where forking is unsafe),
or when a worker dies or fails on a job, that job is drawn in the parent process instead, so a
report is never missing a chart and a real drawing error is raised where it can be seen.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parent forks before numpy, let alone the plotting libraries, is imported
    from perpbot.backtest.candle_bars import Candles
    from perpbot.backtest.chart_jobs import ChartJob

_LEN = struct.Struct("<Q")
BACKTEST_AHEAD = ("equity", "trades", "trades", "trades")
"""``figure_stash`` layouts a backtest's worker builds during the run: one per PNG of 3 symbols."""


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    """``fork`` exists and this process runs a single thread (a fork copies only the calling
    thread, so a lock held by another one would stay locked in the child)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def share(costs: Sequence[int], processes: int) -> list[list[int]]:
    """Job indices per process, longest first onto the least loaded (greedy LPT); no empty
    group unless there are fewer jobs than processes."""
    groups: list[list[int]] = [[] for _ in range(max(1, min(processes, len(costs))))]
    load = [0] * len(groups)
    for i in sorted(range(len(costs)), key=lambda k: (-costs[k], k)):
        g = load.index(min(load))
        groups[g].append(i)
        load[g] += costs[i]
    return groups


# ---------------------------------------------------------------------------------------------
# Framing on raw pipe file descriptors
# ---------------------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def send(fd: int, payload: bytes) -> None:
    _write_all(fd, _LEN.pack(len(payload)) + payload)


def recv(fd: int) -> bytes | None:
    """One framed message, or None when the other end closed first."""
    head = _read_exact(fd, _LEN.size)
    if head is None:
        return None
    return _read_exact(fd, _LEN.unpack(head)[0])


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------


def readable(fd: int) -> bool:
    """Data (or the end of the stream) is waiting on ``fd``."""
    return bool(select.select([fd], [], [], 0)[0])


def _render_group(jobs: Sequence[ChartJob]) -> list[str | None]:
    """Per job: None when written, else the error in one line."""
    from perpbot.backtest.chart_jobs import render

    out: list[str | None] = []
    for job in jobs:
        try:
            render(job)
            out.append(None)
        except Exception as exc:  # reported to the parent, which draws the job itself
            out.append(f"{type(exc).__name__}: {exc}")
    return out


def longest_first(costs: Sequence[int]) -> list[int]:
    """Job indices, costliest first (ties in the given order): the order processes pull them."""
    return sorted(range(len(costs)), key=lambda k: (-costs[k], k))


_INDEX = struct.Struct("<I")


def _pull(queue: int) -> int | None:
    """The next job index from the shared queue, or None when it is empty. Every index was
    written before any process read, whole records in one pipe buffer, so each 4-byte read takes
    exactly one index, atomically, whichever process asks."""
    data = os.read(queue, _INDEX.size)
    return _INDEX.unpack(data)[0] if data else None


def _render_pulled(jobs: Sequence[ChartJob], queue: int) -> dict[int, str | None]:
    """Draw jobs pulled from ``queue`` until it is empty; per index drawn, as ``_render_group``."""
    done: dict[int, str | None] = {}
    while (i := _pull(queue)) is not None:
        done[i] = _render_group([jobs[i]])[0]
    return done


def _render_batch(jobs: Sequence[ChartJob], processes: int) -> list[str | None]:
    """Every job, drawn by this process and ``processes - 1`` forked children.

    Why a shared queue rather than fixed groups (issue 13): the measured cost of a chart varies
    with its data (loaded machine: a trade chart took 0.25-0.47 s, an HTML page half a PNG, not the quarter
    ``chart_jobs.COST`` says), so fixed groups finished up to ~0.35 s apart while a core idled.
    Each process instead pulls the next index, costliest first, from one pipe (greedy LPT at run
    time): they finish within about one chart of each other."""
    order = longest_first([j.cost for j in jobs])
    n = max(1, min(processes, len(jobs)))
    payload = b"".join(_INDEX.pack(i) for i in order)
    if n < 2 or len(payload) > select.PIPE_BUF:  # one process, or too many for one atomic write
        return _render_static(jobs, n)
    q_r, q_w = os.pipe()
    _write_all(q_w, payload)  # whole, before any reader: every read below takes one record
    os.close(q_w)  # an empty queue then reads as end of file
    children: list[tuple[int, int]] = []
    for _ in range(n - 1):
        children.append(_fork_child(lambda: _render_pulled(jobs, q_r)))
    results: list[str | None] = ["not drawn"] * len(jobs)  # a dead child's jobs: the parent draws
    for i, res in _render_pulled(jobs, q_r).items():
        results[i] = res
    os.close(q_r)
    for pid, r in children:
        reply = recv(r)
        os.close(r)
        os.waitpid(pid, 0)
        for i, res in (json.loads(reply) if reply is not None else {}).items():
            results[int(i)] = res
    return results


def _fork_child(work: Callable[[], object]) -> tuple[int, int]:
    """Fork a child that runs ``work`` and sends its JSON answer back; (pid, read end). The
    child leaves with ``os._exit`` (1 when ``work`` raised: the parent then reads no answer)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which leaves with os._exit
        code = 1
        try:
            os.close(r)
            send(w, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _render_static(jobs: Sequence[ChartJob], processes: int) -> list[str | None]:
    """Every job, shared by ``share`` between this process and ``processes - 1`` children."""
    groups = share([j.cost for j in jobs], processes)
    children: list[tuple[int, int, list[int]]] = []
    for group in groups[1:]:
        children.append((*_fork_child(lambda g=group: _render_group([jobs[i] for i in g])), group))
    results: list[str | None] = ["not drawn"] * len(jobs)
    for i, res in zip(groups[0], _render_group([jobs[i] for i in groups[0]]), strict=True):
        results[i] = res
    for pid, r, group in children:
        reply = recv(r)
        os.close(r)
        os.waitpid(pid, 0)
        got = json.loads(reply) if reply is not None else ["chart worker died"] * len(group)
        for i, res in zip(group, got, strict=True):
            results[i] = res
    return results


def _worker(rfd: int, wfd: int, processes: int, ahead: Sequence[str]) -> None:
    from perpbot.backtest.chart_jobs import decode
    from perpbot.backtest.worker_inbox import Inbox, work_ahead

    gc.disable()  # imports, warm-up and figures built ahead make no garbage worth a full pass
    inbox = Inbox(rfd)
    work_ahead(inbox, ahead)
    gc.freeze()  # the plotting libraries stay: collections while drawing skip them
    gc.enable()
    if inbox.head is None:
        return
    jobs = []
    for _ in range(int(inbox.head)):
        blob = recv(rfd)
        if blob is None:
            return
        jobs.append(decode(blob))
    send(wfd, json.dumps(_render_batch(jobs, processes)).encode())


# ---------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------


_early: ChartPool | None = None  # forked by ``start_early``, not yet handed to ``ChartPool.start``


def start_early() -> None:
    """Fork the chart worker before the command line is even parsed (``cli.main``, for a
    ``perpbot backtest`` that will draw charts): its imports and warm-up, longer than the parent's
    way to the end of its run, start ~0.1 s sooner. The next ``ChartPool.start()`` takes it;
    :func:`discard_early` stops it when nothing did (help, a usage error, a bad flag)."""
    global _early
    if _early is None:
        _early = ChartPool.start(ahead=BACKTEST_AHEAD)


def discard_early() -> None:
    """Stop and reap an early worker no command took (no-op otherwise)."""
    global _early
    pool, _early = _early, None
    if pool is not None:
        pool.close()


class ChartPool:
    """``with ChartPool.start() as pool: …; pool.render(jobs)`` (one batch per pool)."""

    def __init__(self, pid: int | None = None, to_worker: int = -1, from_worker: int = -1) -> None:
        self.pid = pid
        self._to = to_worker
        self._from = from_worker
        self._replied = False
        self.in_process: list[ChartJob] = []  # jobs the parent drew itself (fallback)
        self._jobs: list[ChartJob] = []  # sent, not yet finished
        self._ahead_sent = False

    @classmethod
    def start(cls, processes: int | None = None, ahead: Sequence[str] = ()) -> ChartPool:
        """Fork the warm-up worker now, or return an in-process pool when forking is unsafe or
        there is no second core (a worker would then only add its own imports and warm-up).
        A worker :func:`start_early` forked for this process is handed over instead. Once warm,
        it builds the ``ahead`` figures (``figure_stash``) until the jobs arrive."""
        global _early
        if processes is None and _early is not None:
            pool, _early = _early, None
            return pool
        n = usable_cpus() if processes is None else max(1, processes)
        if n < 2 or not can_fork():
            return cls()
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker; leaves with os._exit, never returns
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it without a traceback
                os.close(down_w)
                os.close(up_r)
                _worker(down_r, up_w, n, ahead)
                code = 0
            finally:
                os._exit(code)
        os.close(down_r)
        os.close(up_w)
        return cls(pid, down_w, up_r)

    def render(self, jobs: Sequence[ChartJob]) -> list[Path]:
        """Draw and write every job; returns their paths (in the given order)."""
        self.send(jobs)
        return self.finish()

    def send_ahead(self, candles: Mapping[str, Candles]) -> None:
        """Hand the trade charts' candles to the worker before the loop runs: it draws them into
        their figures meanwhile (``worker_inbox``). Sent only when the message fits the pipe's
        buffer whole, so the run never waits for a worker still importing; else not at all."""
        if self.pid is None or self._ahead_sent or self._jobs:
            return
        from perpbot.backtest.worker_inbox import encode_candles, fits_in_pipe

        self._ahead_sent = True
        msg = encode_candles(candles)
        if fits_in_pipe(self._to, _LEN.size + len(msg)):
            try:
                send(self._to, msg)
            except OSError:  # the worker is gone: finish draws here
                self.close()

    def send(self, jobs: Sequence[ChartJob]) -> None:
        """Hand the jobs to the worker without waiting: the caller may draw something else
        meanwhile (the walk-forward's own charts), then :meth:`finish`."""
        from perpbot.backtest.chart_jobs import encode

        self._jobs = list(jobs)
        if self.pid is not None:
            try:
                send(self._to, str(len(self._jobs)).encode())
                for job in self._jobs:
                    send(self._to, encode(job))
            except OSError:  # the worker is gone (broken pipe): finish draws here
                self.close()

    def finish(self) -> list[Path]:
        """Wait for the worker's reply; draw here every job it did not write; the paths."""
        from perpbot.backtest.chart_jobs import render

        jobs, self._jobs = self._jobs, []
        results: list[str | None] = ["no worker"] * len(jobs)
        if self.pid is not None:
            try:
                reply = recv(self._from)
                if reply is not None:
                    results = json.loads(reply)
                    self._replied = True
            except OSError:  # the worker is gone: draw here
                pass
            self.close()
        for job, res in zip(jobs, results, strict=True):
            if res is not None:
                self.in_process.append(job)
                render(job)
        return [j.path for j in jobs]

    def close(self) -> None:
        """Release the worker: stopped if it has not replied (still warming up, or the run
        failed before its charts), then reaped."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        for fd in (self._to, self._from):
            os.close(fd)
        if not self._replied:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)

    def __enter__(self) -> ChartPool:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
