"""A graceful stop (SIGINT/SIGTERM) while a bot is re-placing a protective order: the
re-placement is in-flight handling and finishes before the process exits (issue 10 §1, SPEC §13
rows 12 and 28): the position is never left on the exchange without its stop-loss. When it
cannot finish within the stop's bound, the operator is told to check that position."""

from __future__ import annotations

import asyncio
from pathlib import Path

from perpbot.config import load_config
from perpbot.engine.notifier import RecordingNotifier
from perpbot.runtime.app import Runtime
from tests.runtime.opsenv import inject_faults, lose_stop_loss_slowly, settings, trade_until_open
from tests.runtime.simproc import Simulator
from tests.support.runtime import loopback_options

SLOW_MS = 3000  # the venue's answer to the bot's protection check


async def _stop_while_replacing_the_stop_loss(
    sim: Simulator, journal: Path, drain_s: float
) -> tuple[str, RecordingNotifier, dict]:
    """Trade until a position is protected, lose its SL (cancelled from outside), stop the
    runtime while the bot is re-placing it; the symbol, the alerts, the venue's state after."""
    notifier = RecordingNotifier()
    cfg = load_config(settings(sim), env_file=None)
    rt = Runtime(cfg, loopback_options(journal, drain_s=drain_s), out=lambda _l: None, notifier=notifier)
    await rt.start()
    try:
        sym = str((await trade_until_open(sim, rt))[0]["symbol"])
        await lose_stop_loss_slowly(sim, rt, sym, SLOW_MS)
    finally:
        await asyncio.wait_for(rt.stop(), 120)
    return sym, notifier, await asyncio.to_thread(sim.state)


def _kinds(state: dict, sym: str) -> list[str]:
    assert [p for p in state["positions"] if p["symbol"] == sym], "the position stays open"
    return sorted(a["orderType"] for a in state["algo_orders"] if a["symbol"] == sym)


async def test_a_stop_lets_the_replacement_of_a_lost_stop_loss_finish(sim: Simulator, tmp_path: Path) -> None:
    sym, notifier, state = await _stop_while_replacing_the_stop_loss(sim, tmp_path / "j.sqlite3", 60.0)
    assert _kinds(state, sym) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert not [t for t in notifier.texts("alert") if t.startswith("stop:")]


async def test_a_replacement_cut_by_the_stop_bound_is_alerted(sim: Simulator, tmp_path: Path) -> None:
    sym, notifier, state = await _stop_while_replacing_the_stop_loss(sim, tmp_path / "j.sqlite3", 0.5)
    assert _kinds(state, sym) == ["TAKE_PROFIT_MARKET"]
    (text,) = [t for t in notifier.texts("alert") if t.startswith("stop:")]
    assert f"SL/TP placement still running after 0.5 s was cancelled: {sym}; CHECK" in text


async def test_a_stop_lets_a_reconcile_pass_that_replaces_a_lost_stop_loss_finish(
    sim: Simulator, tmp_path: Path
) -> None:
    """The stop-loss disappears without an event (the user stream withholds it): the periodic
    reconciliation finds it missing and re-places it. A stop during that pass cancelled it."""
    cfg = load_config(settings(sim), env_file=None)
    opts = loopback_options(tmp_path / "j.sqlite3", reconcile_s=1.0)
    rt = Runtime(cfg, opts, out=lambda _l: None, notifier=RecordingNotifier())
    await rt.start()
    try:
        sym = str((await trade_until_open(sim, rt))[0]["symbol"])
        sl_id = rt.bots[sym].state.sl_id
        slow = {"kind": "latency", "ms": SLOW_MS, "endpoint": "/fapi/v1/openAlgoOrders", "symbol": sym}
        deaf = {"kind": "silent_stream", "stream": "private", "seconds": 120}
        await asyncio.to_thread(inject_faults, sim, [deaf, slow])
        await rt.exchange.cancel_conditional(sym, sl_id)
        for _ in range(1000):  # the reconcile pass waits for its slow protection check
            state = await asyncio.to_thread(sim.state)
            if any(f["kind"] == "latency" and f["hits"] for f in state["faults"]):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("no reconcile pass checked the protection")
        assert rt.bots[sym].state.sl_id == sl_id  # the bot did not hear of the cancel
    finally:
        await asyncio.wait_for(rt.stop(), 120)
    state = await asyncio.to_thread(sim.state)
    assert _kinds(state, sym) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
