"""Per-symbol isolation and restart (issue 10 §1): one symbol's failure never reaches another."""

from __future__ import annotations

import asyncio

from perpbot.engine.notifier import RecordingNotifier
from perpbot.runtime.supervisor import SymbolWorker


async def test_an_exception_in_one_job_is_alerted_and_the_bot_goes_on() -> None:
    alerts = RecordingNotifier()
    done: dict[str, list[int]] = {"A": [], "B": []}
    a = SymbolWorker("A", alerts.notify)
    b = SymbolWorker("B", alerts.notify)
    a.start()
    b.start()

    def job(sym: str, i: int, fail: bool = False):
        async def run() -> None:
            if fail:
                raise RuntimeError("boom")
            done[sym].append(i)

        return run

    a.submit(job("A", 1, fail=True))
    for i in range(3):
        a.submit(job("A", i + 2))
        b.submit(job("B", i))
    await asyncio.wait_for(asyncio.gather(a.join(), b.join()), 5)
    assert done == {"A": [2, 3, 4], "B": [0, 1, 2]}
    assert a.stats.job_errors == 1 and a.stats.restarts == 0 and b.stats.job_errors == 0
    assert [k for k, _ in alerts.messages] == ["alert"]
    assert "**[A]** error while handling a candle (RuntimeError: boom)" in alerts.messages[0][1]
    await a.stop()
    await b.stop()


async def test_a_dead_worker_restarts_with_backoff_and_keeps_its_queue() -> None:
    alerts = RecordingNotifier()
    deaths = [2]  # the loop itself dies twice (a bug outside the per-job guard)

    def hook() -> None:
        if deaths[0] > 0:
            deaths[0] -= 1
            raise ValueError("loop bug")

    handled: list[int] = []
    other: list[int] = []
    w = SymbolWorker("A", alerts.notify, backoff_s=0.05, backoff_max_s=1.0, loop_hook=hook)
    b = SymbolWorker("B", alerts.notify)
    for i in range(3):

        async def run(i: int = i) -> None:
            handled.append(i)

        w.submit(run)

        async def run_b(i: int = i) -> None:
            other.append(i)

        b.submit(run_b)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    w.start()
    b.start()
    await asyncio.wait_for(asyncio.gather(w.join(), b.join()), 5)
    assert handled == [0, 1, 2] and other == [0, 1, 2]
    assert w.stats.restarts == 2 and b.stats.restarts == 0
    # back-off doubles: 0.05 s then 0.1 s
    assert w.stats.restart_times[-1] - t0 >= 0.15 - 0.01
    texts = alerts.texts("alert")
    assert len(texts) == 2 and all("**[A]** bot task died (ValueError: loop bug)" in t for t in texts)
    assert "restarting in 0.1 s" in texts[1]
    await w.stop()
    await b.stop()


async def test_stop_drains_queued_jobs_then_refuses_new_ones() -> None:
    w = SymbolWorker("A", RecordingNotifier().notify)
    w.start()
    seen: list[int] = []
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()
        seen.append(1)

    async def quick() -> None:
        seen.append(2)

    w.submit(slow)
    w.submit(quick)
    stopping = asyncio.create_task(w.stop(drain=True))
    await asyncio.sleep(0.01)
    w.submit(quick)  # refused: the runtime is stopping
    gate.set()
    await asyncio.wait_for(stopping, 5)
    assert seen == [1, 2]


async def test_a_stray_cancellation_inside_a_job_is_a_job_error_not_the_workers_end() -> None:
    """A ``CancelledError`` out of a job (a cancelled future deep in a library) while nobody
    cancelled the worker: counted and alerted like any job error, the next job runs, ``join``
    returns. Before, it ended the worker task as "cancelled", the supervisor took that for its own
    cancellation and returned, and ``join`` (and a graceful stop's drain) waited forever."""
    alerts = RecordingNotifier()
    w = SymbolWorker("A", alerts.notify)
    w.start()
    handled: list[str] = []

    async def stray() -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut  # raises CancelledError though this task was never cancelled

    async def next_one() -> None:
        handled.append("next")

    w.submit(stray)
    w.submit(next_one)
    await asyncio.wait_for(w.join(), 5)
    assert handled == ["next"] and w.alive
    assert w.stats.job_errors == 1 and w.stats.restarts == 0
    assert "error while handling a candle (CancelledError" in alerts.messages[0][1]
    assert await asyncio.wait_for(w.stop(), 5) == 0


async def test_a_worker_task_ended_by_a_cancellation_it_did_not_get_is_restarted() -> None:
    """The loop itself raising ``CancelledError`` (a bug outside the per-job guard) is a death
    like any other: restarted with its queue, not mistaken for the supervisor's own stop."""
    alerts = RecordingNotifier()
    bugs = [1]

    def hook() -> None:
        if bugs[0]:
            bugs[0] -= 1
            raise asyncio.CancelledError

    w = SymbolWorker("A", alerts.notify, backoff_s=0.01, loop_hook=hook)
    handled: list[int] = []

    async def job() -> None:
        handled.append(1)

    w.submit(job)
    w.start()
    await asyncio.wait_for(w.join(), 5)
    assert handled == [1] and w.stats.restarts == 1
    await w.stop()


async def test_a_graceful_stop_drains_within_its_bound_then_cancels_what_is_stuck() -> None:
    """SIGTERM must stop the process even when a job never ends: after ``drain_s`` the in-flight
    job is cancelled (its ``finally`` runs), the queued one dropped, both counted as abandoned."""
    w = SymbolWorker("A", RecordingNotifier().notify)
    w.start()
    cleaned: list[str] = []
    ran: list[str] = []

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("stuck")

    async def queued() -> None:
        ran.append("queued")

    w.submit(stuck)
    w.submit(queued)
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    abandoned = await asyncio.wait_for(w.stop(drain=True, drain_s=0.3), 10)
    assert abandoned == 2
    assert 0.3 <= asyncio.get_running_loop().time() - started < 5
    assert cleaned == ["stuck"] and ran == [] and not w.alive
    await asyncio.wait_for(w.join(), 1)  # nothing is left for anyone to wait on


async def test_a_drain_that_finishes_in_time_abandons_nothing() -> None:
    w = SymbolWorker("A", RecordingNotifier().notify)
    w.start()
    done: list[int] = []

    async def job() -> None:
        await asyncio.sleep(0.05)
        done.append(1)

    w.submit(job)
    assert await asyncio.wait_for(w.stop(drain=True, drain_s=30), 10) == 0
    assert done == [1]
