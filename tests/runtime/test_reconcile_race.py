"""Reconciliation runs beside the candle jobs (periodic, every 300 s of the clock, aligned to
5-minute marks: every third pass falls on a 15-minute candle close, when entries are made). A
pass whose position read was answered "flat" *before* an entry filled, but whose answer is
acted upon *after* the entry took its position, must not SYNC-close that live position (a
phantom trade booked, the new SL/TP cancelled as orphans, the position left naked)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from perpbot.config import load_config
from perpbot.engine.notifier import RecordingNotifier
from perpbot.runtime.app import Runtime
from tests.runtime.opsenv import TRADED, advance
from tests.runtime.simproc import Simulator
from tests.support.runtime import loopback_env, loopback_options
from tests.support.slow_answer_proxy import slow_answer_proxy


async def test_a_reconcile_answer_older_than_an_entry_does_not_close_the_new_position(
    sim: Simulator, tmp_path: Path
) -> None:
    async with slow_answer_proxy(sim.http) as proxy:
        env = loopback_env(sim, tuple(TRADED), BINANCE_FAPI_URL=proxy.url)
        cfg = load_config(env, env_file=None)
        rt = Runtime(
            cfg, loopback_options(tmp_path / "j.sqlite3"), out=lambda _l: None, notifier=RecordingNotifier()
        )
        await rt.start()
        try:
            sym = ""
            for _ in range(160):
                flat = [s for s in TRADED if not rt.bots[s].in_position]
                if not flat:
                    await advance(sim, rt, 1)
                    continue
                sym = flat[0]
                bot = rt.bots[sym]
                # A reconcile pass of the flat symbol: its position read is served ("flat"),
                # its answer held on the way back.
                proxy.hold_next("/fapi/v2/positionRisk")
                rec = asyncio.ensure_future(bot.reconcile())  # as ``Runtime``'s periodic pass does
                await asyncio.wait_for(proxy.held.wait(), 30)
                await advance(sim, rt, 1)  # the candle: maybe an entry, made while the answer waits
                entered = bot.in_position
                proxy.release.set()
                await asyncio.wait_for(rec, 60)
                if entered:
                    break
            bot = rt.bots[sym]
            state = await asyncio.to_thread(sim.state)
            venue = [(p["side"], float(p["quantity"])) for p in state["positions"] if p["symbol"] == sym]
            assert venue, "loose parameters must enter on this market"
            st = bot.state
            mine = [(st.side.value, st.qty)] if st.side is not None else []
            kinds = sorted(a["orderType"] for a in state["algo_orders"] if a["symbol"] == sym)
            synced = [t for t in bot.closed_trades if t.reason.value == "SYNC"]
            assert (mine, kinds, synced) == (venue, ["STOP_MARKET", "TAKE_PROFIT_MARKET"], [])
        finally:
            await rt.stop()
