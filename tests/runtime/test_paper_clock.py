"""The clocks of a paper replay: request limits count on replay time paced by the wall clock
(``PacedReplayClock``), and a bot's waits end with the event or when the driver finds the
system settled (``ReplayClock``)."""

from __future__ import annotations

import asyncio

import pytest

from perpbot.runtime.paper import ReplayClock
from perpbot.simulator.errors import BinanceError
from perpbot.simulator.weights import PacedReplayClock, RateLimiter

MIN = 60_000


class Manual:
    def __init__(self, t: int = 0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def test_paced_time_follows_the_replay_and_runs_at_wall_speed_between_its_jumps() -> None:
    replay, wall = Manual(15 * MIN), Manual(1_000)
    clock = PacedReplayClock(replay, wall)
    assert clock() == 15 * MIN
    wall.t += 1_500  # 1.5 s of wall time while the candle is handled
    assert clock() == 15 * MIN + 1_500
    replay.t = 30 * MIN  # the next candle: back to the replay time
    assert clock() == 30 * MIN
    wall.t += 200
    assert clock() == 30 * MIN + 200


def test_paced_time_never_goes_back_when_a_candle_takes_longer_than_its_step() -> None:
    replay, wall = Manual(0), Manual(0)
    clock = PacedReplayClock(replay, wall)
    assert clock() == 0
    wall.t += 20 * MIN  # a very slow candle
    assert clock() == 20 * MIN
    replay.t = 15 * MIN
    assert clock() == 20 * MIN


def test_a_replay_limiter_gives_every_candle_its_own_minute_of_weight() -> None:
    replay, wall = Manual(15 * MIN), Manual(0)
    limiter = RateLimiter(PacedReplayClock(replay, wall), weight_limit=100)
    for _ in range(20):  # 20 candles of 90 weight each, in no wall time at all
        limiter.admit(90, False)
        replay.t += 15 * MIN
    with pytest.raises(BinanceError):  # within one candle the limit still holds
        limiter.admit(90, False)
        limiter.admit(90, False)


async def test_a_wait_ends_with_its_event_or_when_the_driver_expires_it() -> None:
    clock = ReplayClock(1_000)
    ev = asyncio.Event()
    task = asyncio.ensure_future(clock.wait_for(ev.wait(), 3600.0))
    await asyncio.sleep(0)
    assert clock.waiting == 1
    ev.set()
    assert await task is True
    assert clock.waiting == 0

    never = asyncio.Event()
    task = asyncio.ensure_future(clock.wait_for(never.wait(), 3600.0))
    await asyncio.sleep(0)
    clock.expire()  # the driver found nothing more can arrive before the next candle
    with pytest.raises(TimeoutError):
        await task
    assert clock.expired == 1 and clock.waiting == 0
