"""The position read a candle job starts early (``candle_job``: it overlaps the wait for the
close's OI/funding or for BTC/ETH) is a snapshot: a user-stream event handled meanwhile (the
position closed by a stop, a take-profit or by hand) makes it stale. Handed to the bot, a stale
"open" snapshot of a position the bot has just booked as closed made it adopt a position that
no longer exists: a phantom in the risk registry, and reduce-only SL/TP placed on a flat symbol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from perpbot.config import load_config
from perpbot.engine.clock import LiveClock
from perpbot.engine.notifier import RecordingNotifier
from perpbot.runtime.app import Runtime
from tests.runtime.opsenv import inject_faults, joined, settings, trade_until_open
from tests.runtime.simproc import Simulator
from tests.support.runtime import loopback_options
from tests.support.slow_answer_proxy import slow_answer_proxy

OI_LATENCY_MS = 800  # the close's OI read: the job waits for it (well under the 1 s snapshot age)


class VenueEraClock(LiveClock):
    """Wall time shifted to the replay's era: the bot stamps what it does in the venue's time, as
    live (an execution by an order the bot does not know is its position's only when it came
    after the entry, ``ledger._owner``)."""

    def __init__(self, venue_now_ms: int) -> None:
        self.offset_ms = venue_now_ms - super().now_ms()

    def now_ms(self) -> int:
        return super().now_ms() + self.offset_ms


async def _until(cond: object, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.005)
    return False


async def _runtime(sim: Simulator, journal: Path, **env: str) -> Runtime:
    venue_now = int((await asyncio.to_thread(sim.state))["replay_time_ms"])
    cfg = load_config({**settings(sim), **env}, env_file=None)
    opts = loopback_options(journal)
    return Runtime(
        cfg, opts, clock=VenueEraClock(venue_now), out=lambda _l: None, notifier=RecordingNotifier()
    )


async def _agrees_with_the_exchange(rt: Runtime, sim: Simulator, sym: str, settle_s: float = 10.0) -> None:
    """The bot agrees with the exchange: flat (its signal found the symbol flat and may have
    entered anew, then with its own protection), never a phantom of the closed position. The
    closed position's SL/TP are cancelled after its close is booked, so on a loaded machine the
    venue may still show them for a moment: agreement is awaited (a phantom never agrees)."""
    end = time.monotonic() + settle_s
    while True:
        try:
            await _agree_now(rt, sim, sym)
            return
        except AssertionError:
            if time.monotonic() > end:
                raise
        await asyncio.sleep(0.1)


async def _agree_now(rt: Runtime, sim: Simulator, sym: str) -> None:
    state = await asyncio.to_thread(sim.state)
    venue = [(p["side"], float(p["quantity"])) for p in state["positions"] if p["symbol"] == sym]
    algos = [a for a in state["algo_orders"] if a["symbol"] == sym]
    st = rt.bots[sym].state
    mine = [(st.side.value, st.qty)] if st.side is not None else []
    assert mine == venue, f"bot {mine}, exchange {venue}"
    assert rt.risk.is_open(sym) == bool(venue)
    assert sorted(a["orderType"] for a in algos) == (["STOP_MARKET", "TAKE_PROFIT_MARKET"] if venue else [])
    assert all(float(a["quantity"]) == venue[0][1] for a in algos)


async def _close_by_hand(rt: Runtime, sym: str) -> None:
    """A reduce-only market close from outside the bot (the web UI); the bot books it."""
    bot = rt.bots[sym]
    st = bot.state
    assert st.side is not None
    await rt.exchange.market_order(sym, st.side.exit_order_side, st.qty, reduce_only=True)
    assert await _until(lambda: not bot.in_position, 2.0), "the manual close is booked"


async def _close_during_a_decision(
    sim: Simulator, rt: Runtime, sym: str, bar: Callable[[], Awaitable[bool]]
) -> None:
    """Bar by bar (``bar``: advance one, True when it closed the position during the decision),
    back in a position after each bar that did not; then the bot must agree with the exchange."""
    for _ in range(120):
        closed = await bar()
        await joined(rt)
        if closed:
            await _agrees_with_the_exchange(rt, sim, sym)
            return
        if not rt.bots[sym].in_position:
            await trade_until_open(sim, rt)
    raise AssertionError("no signal while in position")


async def test_a_position_closed_while_the_candle_job_waits_is_not_adopted_again(
    sim: Simulator, tmp_path: Path
) -> None:
    rt = await _runtime(sim, tmp_path / "journal.sqlite3")
    await rt.start()
    try:
        sym = str((await trade_until_open(sim, rt))[0]["symbol"])
        rt.micro_decides[sym] = True  # as with an ML filter: the job waits for the OI/funding reads
        slow = {"kind": "latency", "ms": OI_LATENCY_MS, "endpoint": "/fapi/v1/openInterest", "symbol": sym}
        await asyncio.to_thread(inject_faults, sim, [{**slow, "seconds": 900}])

        async def bar() -> bool:
            last = rt.window.last_open(sym)
            await asyncio.to_thread(sim.advance, 1)
            assert await _until(lambda: rt.window.last_open(sym) != last, 30)
            prep = rt.window.prepare(sym)
            if prep is None or prep.signal is None or not rt.bots[sym].in_position:
                return False
            # The job has read the position and waits for OI: the position is closed by hand
            # meanwhile, and the bot books that close.
            await asyncio.sleep(0.2)
            await _close_by_hand(rt, sym)
            return True

        await _close_during_a_decision(sim, rt, sym, bar)
    finally:
        await rt.stop()


async def test_a_position_closed_while_the_bot_awaits_its_read_is_not_adopted_again(
    sim: Simulator, tmp_path: Path
) -> None:
    """The same with the read's answer itself late (served, then held on the way back): the
    close is booked after the job handed the read to the bot, while the bot awaits it."""
    async with slow_answer_proxy(sim.http) as proxy:
        rt = await _runtime(sim, tmp_path / "journal.sqlite3", BINANCE_FAPI_URL=proxy.url)
        await rt.start()
        try:
            sym = str((await trade_until_open(sim, rt))[0]["symbol"])

            async def bar() -> bool:
                handled = rt.candles_handled[sym]
                proxy.hold_next("/fapi/v2/positionRisk", sym)
                await asyncio.to_thread(sim.advance, 1)
                assert await _until(lambda: proxy.held.is_set() or rt.candles_handled[sym] > handled, 30)
                closed = False
                if proxy.held.is_set():  # a signal: the bot awaits the answer held here
                    assert await _until(lambda: rt.candles_handled[sym] > handled, 30)
                    await asyncio.sleep(0.1)
                    await _close_by_hand(rt, sym)
                    closed = True
                proxy.hold_path = None
                proxy.release.set()
                return closed

            await _close_during_a_decision(sim, rt, sym, bar)
        finally:
            await rt.stop()
