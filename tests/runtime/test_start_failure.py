"""Start-up failing partway (a later bot's recovery gives up on an unreachable read) after an
earlier bot recovered its position and is re-placing a protective order it just lost: start-up
closes what it opened, and must let that re-placement finish first (bounded), as a graceful stop
does (``supervisor.settle_background``), or the position is left without its stop-loss."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from perpbot.config import load_config
from perpbot.engine.notifier import RecordingNotifier
from perpbot.exchange.errors import ExchangeError
from perpbot.runtime.app import Runtime
from tests.runtime.opsenv import TRADED, inject_faults, lose_stop_loss_slowly, settings, trading_runtime
from tests.runtime.simproc import Simulator
from tests.support.runtime import loopback_options

SLOW_MS = 9000  # under the client's 10 s request timeout


async def test_a_failed_start_up_lets_an_earlier_bots_stop_loss_replacement_finish(
    sim: Simulator, tmp_path: Path
) -> None:
    journal = tmp_path / "j.sqlite3"
    async with trading_runtime(sim, journal) as (_rt, positions):
        sym = next(iter(positions))
    later = next(s for s in TRADED if s != sym)
    # The next run recovers ``sym`` first; ``later``'s position read then fails on every attempt
    # (5 attempts, 1+2+4+8 s back-off: start-up gives up ~16 s later).
    cfg = load_config(settings(sim), env_file=None).with_symbols([sym, later])
    fail = [
        {"kind": "latency", "ms": 1500, "endpoint": "/fapi/v2/positionRisk", "symbol": later},
        {
            "kind": "http_error",
            "status": 503,
            "endpoint": "/fapi/v2/positionRisk",
            "symbol": later,
            "count": 5,
        },
    ]
    await asyncio.to_thread(inject_faults, sim, fail)
    rt = Runtime(
        cfg, loopback_options(journal, drain_s=60.0), out=lambda _l: None, notifier=RecordingNotifier()
    )
    starting = asyncio.ensure_future(rt.start())
    for _ in range(3000):
        if later in rt.bots or starting.done():
            break
        await asyncio.sleep(0.01)
    assert later in rt.bots and not starting.done(), "the later bot's recovery must be under way"
    # The stop-loss is cancelled from outside; the bot re-places it, slowly (its protection
    # check and its new order each answer after 9 s).
    await lose_stop_loss_slowly(sim, rt, sym, SLOW_MS, slow_post=True)
    with pytest.raises(ExchangeError):
        await asyncio.wait_for(starting, 120)
    state = await asyncio.to_thread(sim.state)
    assert [p for p in state["positions"] if p["symbol"] == sym], "the position stays open"
    kinds = sorted(a["orderType"] for a in state["algo_orders"] if a["symbol"] == sym)
    assert kinds == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
