"""The process-wide weight budget, on an injected clock."""

from __future__ import annotations

import pytest

from perpbot.exchange.binance.budget import BannedError, WeightBudget


class Clock:
    def __init__(self, t: int = 1_800_000_000_000) -> None:
        self.t = t
        self.slept: list[float] = []

    def now(self) -> int:
        return self.t

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += int(s * 1000)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("perpbot.exchange.binance.budget.asyncio.sleep", c.sleep)
    return c


async def test_spends_up_to_the_margin_then_waits_for_the_next_minute(clock: Clock) -> None:
    b = WeightBudget(limit=100, margin=0.8, now_ms=clock.now)
    for _ in range(8):
        await b.acquire(10)
    assert b.used == 80 and clock.slept == []
    await b.acquire(10)
    assert len(clock.slept) == 1 and clock.t % 60_000 == 0  # waited for the minute boundary
    assert b.used == 10


async def test_binance_count_corrects_ours_upwards_only(clock: Clock) -> None:
    b = WeightBudget(limit=100, margin=0.8, now_ms=clock.now)
    await b.acquire(5)
    b.observe_used(75)  # another process on the same IP spent weight
    assert b.used == 75
    b.observe_used(10)
    assert b.used == 75
    await b.acquire(10)
    assert clock.slept, "the corrected count made the request wait"


async def test_429_blocks_every_request_for_retry_after(clock: Clock) -> None:
    b = WeightBudget(now_ms=clock.now)
    b.on_429(3.0)
    t0 = clock.t
    await b.acquire(1)
    assert clock.t - t0 == 3000 and b.waits == 1


async def test_418_refuses_until_the_ban_ends_and_alerts_once(clock: Clock) -> None:
    alerts: list[str] = []
    b = WeightBudget(now_ms=clock.now, alert=alerts.append)
    b.on_418(120.0)
    b.on_418(60.0)  # a shorter ban inside the first one: no second alert
    with pytest.raises(BannedError):
        await b.acquire(1)
    assert len(alerts) == 1 and "418" in alerts[0]
    clock.t += 120_000
    await b.acquire(1)


async def test_a_long_429_window_is_an_error_not_a_hang(clock: Clock) -> None:
    b = WeightBudget(now_ms=clock.now)
    b.on_429(600.0)
    with pytest.raises(BannedError):
        await b.acquire(1)


async def test_429_alerts_once_per_back_off_window(clock: Clock) -> None:
    alerts: list[str] = []
    b = WeightBudget(now_ms=clock.now, alert=alerts.append)
    b.on_429(3.0)
    b.on_429(5.0)  # the same burst extends the window: no second alert
    assert len(alerts) == 1 and "429" in alerts[0] and "-1003" in alerts[0]
    await b.acquire(1)  # waits the window out
    b.on_429(2.0)  # a new window later on is a new event
    assert len(alerts) == 2


async def test_an_order_does_not_wait_behind_reads_that_spent_the_minute(clock: Clock) -> None:
    """A stop placement, a cancel or an emergency close must not wait up to a minute behind
    klines/income reads: Binance counts them on the order-count limit (weight 0-1 on the IP)."""
    b = WeightBudget(limit=100, margin=0.8, now_ms=clock.now)
    for _ in range(8):
        await b.acquire(10)  # reads spent the read share of the minute
    await b.acquire(4, order=True)
    await b.acquire(1, order=True)
    assert clock.slept == [] and b.waits == 0
    await b.acquire(1)  # a read still waits for the next minute
    assert len(clock.slept) == 1 and clock.t % 60_000 == 0


async def test_orders_stop_at_the_hard_limit_and_still_honour_429(clock: Clock) -> None:
    b = WeightBudget(limit=100, margin=0.8, now_ms=clock.now)
    b.observe_used(99)  # other clients of the IP spent nearly all of it
    await b.acquire(1, order=True)
    assert clock.slept == []
    await b.acquire(1, order=True)  # over Binance's own limit: wait, as a 429 would follow
    assert len(clock.slept) == 1
    b.on_429(3.0)
    t0 = clock.t
    await b.acquire(1, order=True)
    assert clock.t - t0 == 3000
