"""The candle jobs' lane (``runtime.lane``): one holder at a time; the next turn goes to the most
urgent waiter, first come first served within a class; a cancelled waiter never keeps it."""

from __future__ import annotations

import asyncio

import pytest

from perpbot.runtime.lane import BOOKKEEPING, DECIDE, ROUTINE, Lane


async def test_the_most_urgent_waiter_goes_next_then_arrival_order() -> None:
    lane = Lane()
    await lane.acquire(ROUTINE)
    order: list[str] = []

    async def job(name: str, priority: int) -> None:
        async with lane.turn(priority):
            order.append(name)
            await asyncio.sleep(0)  # still held: nobody else runs in the lane meanwhile
            order.append(name)

    tasks = [
        asyncio.create_task(job("hold-a", BOOKKEEPING)),
        asyncio.create_task(job("next", ROUTINE)),
        asyncio.create_task(job("entry-a", DECIDE)),
        asyncio.create_task(job("entry-b", DECIDE)),
        asyncio.create_task(job("hold-b", BOOKKEEPING)),
    ]
    await asyncio.sleep(0)
    assert order == [] and lane.held
    lane.release()
    await asyncio.gather(*tasks)
    names = order[::2]
    assert order[1::2] == names  # never interleaved
    assert names == ["entry-a", "entry-b", "next", "hold-a", "hold-b"]
    assert not lane.held


async def test_a_free_lane_is_taken_without_waiting() -> None:
    lane = Lane()
    await lane.acquire(BOOKKEEPING)  # would hang if it waited for a release
    assert lane.held
    lane.release()
    assert not lane.held


async def _held_with_two_waiters() -> tuple[Lane, asyncio.Task[None], asyncio.Task[None]]:
    lane = Lane()
    await lane.acquire(ROUTINE)
    waiter = asyncio.create_task(lane.acquire(DECIDE))
    later = asyncio.create_task(lane.acquire(BOOKKEEPING))
    await asyncio.sleep(0)
    return lane, waiter, later


async def test_a_cancelled_waiter_does_not_keep_the_lane() -> None:
    lane, waiter, later = await _held_with_two_waiters()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    lane.release()
    await asyncio.wait_for(later, 1.0)  # the turn went past the cancelled waiter
    assert lane.held
    lane.release()


async def test_a_waiter_cancelled_as_it_is_handed_the_lane_passes_it_on() -> None:
    lane, waiter, later = await _held_with_two_waiters()
    lane.release()  # handed to ``waiter`` …
    waiter.cancel()  # … which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.wait_for(later, 1.0)
    assert lane.held


async def test_bookkeeping_waits_for_every_open_decision() -> None:
    lane = Lane()
    lane.open_decision()
    lane.open_decision()
    waiter = asyncio.create_task(lane.after_decisions())
    await asyncio.sleep(0.01)
    lane.close_decision()
    await asyncio.sleep(0.01)
    assert not waiter.done() and lane.deciding == 1  # one still open
    lane.close_decision()
    await asyncio.wait_for(waiter, 1.0)
    assert lane.deciding == 0


async def test_a_decision_stuck_in_retries_delays_bookkeeping_but_never_stops_it() -> None:
    lane = Lane()
    lane.open_decision()  # never closed
    await asyncio.wait_for(lane.after_decisions(max_wait_s=0.05), 1.0)
    assert lane.deciding == 1
