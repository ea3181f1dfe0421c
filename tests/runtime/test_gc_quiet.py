"""The cyclic collector kept out of a bar's decisions (``runtime.gc_quiet``): off while a candle
job can still decide, back on when none can, never off for longer than the bound, and never
switched on against the process's own wish."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from perpbot.runtime import gc_quiet


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc_quiet._HOLD.reset()
    gc.enable()
    yield
    gc_quiet._HOLD.reset()
    gc.enable()


async def test_collection_is_off_until_the_last_holder_lets_go() -> None:
    first = gc_quiet.hold()
    second = gc_quiet.hold()
    assert not gc.isenabled() and gc_quiet.holders() == 2
    first()
    first()  # a second call of the same release changes nothing
    assert not gc.isenabled() and gc_quiet.holders() == 1
    second()
    assert gc.isenabled() and gc_quiet.holders() == 0


async def test_a_stuck_holder_keeps_it_off_no_longer_than_the_bound() -> None:
    stuck = gc_quiet.hold(max_hold_s=0.05)
    assert not gc.isenabled()
    await asyncio.sleep(0.1)
    assert gc.isenabled()  # the bound: back on although the holder never let go
    other = gc_quiet.hold(max_hold_s=0.05)
    assert gc.isenabled()  # not off again while the stuck one holds
    other()
    stuck()
    again = gc_quiet.hold(max_hold_s=0.05)  # every holder let go: the next hold works again
    assert not gc.isenabled()
    again()
    assert gc.isenabled()


async def test_a_collector_the_process_switched_off_stays_off() -> None:
    gc.disable()
    release = gc_quiet.hold()
    release()
    assert not gc.isenabled()


def test_a_hold_left_by_a_loop_that_ended_is_forgotten_by_the_next_one() -> None:
    async def abandon() -> None:
        gc_quiet.hold()  # never released: its task died with its loop

    asyncio.run(abandon())
    assert not gc.isenabled()

    async def next_loop() -> None:
        release = gc_quiet.hold()
        assert gc_quiet.holders() == 1
        release()

    asyncio.run(next_loop())
    assert gc.isenabled() and gc_quiet.holders() == 0


def test_start_up_objects_are_frozen_until_unfrozen() -> None:
    alive = [[i] for i in range(1000)]
    gc_quiet.freeze_startup()
    try:
        assert gc.get_freeze_count() >= len(alive)
    finally:
        gc_quiet.unfreeze()
    assert gc.get_freeze_count() == 0
