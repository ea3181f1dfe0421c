"""The position read a candle job starts early (``candle_job``: it overlaps the wait for the
close's OI/funding or for BTC/ETH) is a snapshot: a user-stream event handled meanwhile (the
position closed by a stop, a take-profit or by hand) makes it stale. Handed to the bot, a stale
"open" snapshot of a position the bot has just booked as closed made it adopt a position that
no longer exists: a phantom in the risk registry, and reduce-only SL/TP placed on a flat symbol."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from perpbot.config import load_config
from perpbot.engine.clock import LiveClock
from perpbot.engine.notifier import RecordingNotifier
from perpbot.runtime.app import Runtime
from tests.runtime.opsenv import TRADED, joined, settings, trade_until_open
from tests.runtime.simproc import Simulator
from tests.support.runtime import loopback_options

OI_LATENCY_MS = 800  # the close's OI read: the job waits for it (well under the 1 s snapshot age)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator([*TRADED, "BTCUSDT", "ETHUSDT"], 3)
    yield s
    s.stop()


def _inject(sim: Simulator, faults: list[dict[str, object]]) -> None:
    req = urllib.request.Request(sim.http + "/sim/faults", data=json.dumps(faults).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


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


async def test_a_position_closed_while_the_candle_job_waits_is_not_adopted_again(
    sim: Simulator, tmp_path: Path
) -> None:
    venue_now = int((await asyncio.to_thread(sim.state))["replay_time_ms"])
    cfg = load_config(settings(sim), env_file=None)
    opts = loopback_options(tmp_path / "journal.sqlite3")
    rt = Runtime(cfg, opts, clock=VenueEraClock(venue_now), out=lambda _l: None, notifier=RecordingNotifier())
    await rt.start()
    try:
        sym = str((await trade_until_open(sim, rt))[0]["symbol"])
        bot = rt.bots[sym]
        rt.micro_decides[sym] = True  # as with an ML filter: the job waits for the OI/funding reads
        slow = {"kind": "latency", "ms": OI_LATENCY_MS, "endpoint": "/fapi/v1/openInterest", "symbol": sym}
        await asyncio.to_thread(_inject, sim, [{**slow, "seconds": 900}])
        closed = False
        for _ in range(120):
            last = rt.window.last_open(sym)
            await asyncio.to_thread(sim.advance, 1)
            assert await _until(lambda last=last: rt.window.last_open(sym) != last, 30)
            prep = rt.window.prepare(sym)
            st = bot.state
            if prep is not None and prep.signal is not None and st.side is not None:
                # The job has read the position and waits for OI: the position is closed by
                # hand meanwhile (reduce-only market), and the bot books that close.
                await asyncio.sleep(0.2)
                await rt.exchange.market_order(sym, st.side.exit_order_side, st.qty, reduce_only=True)
                assert await _until(lambda: not bot.in_position, 2.0), "the manual close is booked"
                closed = True
            await joined(rt)
            if closed:
                break
            if not bot.in_position:
                await trade_until_open(sim, rt)
        assert closed, "no signal while in position"
        state = await asyncio.to_thread(sim.state)
        venue = [(p["side"], float(p["quantity"])) for p in state["positions"] if p["symbol"] == sym]
        algos = [a for a in state["algo_orders"] if a["symbol"] == sym]
        # The bot agrees with the exchange: flat (its signal found the symbol flat and may have
        # entered anew, then with its own protection), never a phantom of the closed position.
        st = bot.state
        mine = [(st.side.value, st.qty)] if st.side is not None else []
        assert mine == venue, f"bot {mine}, exchange {venue}"
        assert rt.risk.is_open(sym) == bool(venue)
        assert sorted(a["orderType"] for a in algos) == (
            ["STOP_MARKET", "TAKE_PROFIT_MARKET"] if venue else []
        )
        assert all(float(a["quantity"]) == venue[0][1] for a in algos)
    finally:
        await rt.stop()
