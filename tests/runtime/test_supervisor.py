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
