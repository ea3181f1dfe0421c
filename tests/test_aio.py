"""``perpbot.aio.cancel_and_wait``: a stop that cannot hang on a lost cancellation (brief h15hang)."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest

from perpbot.aio import cancel_and_wait


async def _reader_after_a_lost_cancellation(inner: asyncio.Future[str], reading: asyncio.Event) -> None:
    """The WebSocket task's shape: a connect inside ``wait_for``, then reading until cancelled."""
    await asyncio.wait_for(inner, 10)
    reading.set()
    await asyncio.Event().wait()  # reads "forever"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="CPython gh-86296 is fixed in 3.12")
async def test_python_3_11_wait_for_loses_a_cancellation_that_lands_with_its_result() -> None:
    """The stdlib race behind the hang: the task is cancelled in the same loop turn as its
    ``wait_for``'s inner result arrives; the cancellation is swallowed and the task goes on."""
    inner: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    reading = asyncio.Event()
    task = asyncio.create_task(_reader_after_a_lost_cancellation(inner, reading))
    await asyncio.sleep(0)  # the task now waits inside wait_for
    inner.set_result("connected")
    await asyncio.sleep(0)  # wait_for's waiter is released; the task has not run yet
    task.cancel()
    await asyncio.wait_for(reading.wait(), 5)  # it went on despite the cancel
    assert not task.done()
    assert await cancel_and_wait(task, 5)  # and a repeated cancellation ends it
    assert task.cancelled()


async def test_a_task_that_swallows_its_first_cancellation_is_stopped_within_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def swallows_once() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # lost, as in the race above
            await asyncio.sleep(3600)
        await asyncio.Event().wait()

    task = asyncio.create_task(swallows_once(), name="swallower")
    await asyncio.sleep(0)
    assert await asyncio.wait_for(cancel_and_wait(task, 5), 10)
    assert task.cancelled()
    assert "task swallower ended after 2 cancellations" in caplog.text


async def test_a_task_that_never_ends_is_reported_not_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    refusing = [True]

    async def refuses() -> None:
        while refusing[0]:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    task = asyncio.create_task(refuses(), name="stubborn")
    await asyncio.sleep(0)
    assert await asyncio.wait_for(cancel_and_wait(task, 0.3), 5) is False
    assert "task stubborn did not end within 0.3 s of its cancellation" in caplog.text
    assert not task.done()
    refusing[0] = False  # tidy: let it end, or the loop's own shutdown would wait on it
    task.cancel()
    await asyncio.wait_for(task, 5)


async def test_a_failed_task_is_collected_without_raising() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    assert await cancel_and_wait(task, 1)
