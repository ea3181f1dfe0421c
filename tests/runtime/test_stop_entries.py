"""SIGINT/SIGTERM: "stop taking entries, let in-flight handling finish" (issue 10 §1). A candle
job that is already running when the stop comes (a decision at the candle close, waiting for the
venue) finishes, but sends no new entry: a stop requested is a reason to fail closed (exits and
protection go on, the next start recovers what is open)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.runtime.opsenv import TRADED, inject_faults, runtime
from tests.runtime.simproc import Simulator


async def test_a_decision_in_flight_when_the_stop_comes_sends_no_entry(
    sim: Simulator, tmp_path: Path
) -> None:
    rt = runtime(sim, tmp_path / "journal.sqlite3")
    await rt.start()
    stopped = False
    try:
        # The venue answers position reads slowly: a signal's decision is in flight for 2 s.
        slow = {"kind": "latency", "ms": 2000, "endpoint": "/fapi/v2/positionRisk", "seconds": 900}
        await asyncio.to_thread(inject_faults, sim, [slow])
        deciding: list[str] = []
        for _ in range(160):
            signals = dict(rt.signals)
            await asyncio.to_thread(sim.advance, 1)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                deciding = [
                    s
                    for s in TRADED
                    if rt.signals[s] > signals[s] and not rt.bots[s].in_position and rt.workers[s].pending
                ]
                if deciding or all(rt.workers[s].pending == 0 and rt.candles_handled[s] for s in TRADED):
                    break
                await asyncio.sleep(0.01)
            if deciding:
                break
        assert deciding, "loose parameters must give a signal on a flat symbol"
        before = await asyncio.to_thread(sim.state)
        stopped = True
        await asyncio.wait_for(rt.stop(), 120)
    finally:
        if not stopped:
            await rt.stop()
    after = await asyncio.to_thread(sim.state)
    opened = {p["symbol"] for p in after["positions"]} - {p["symbol"] for p in before["positions"]}
    assert not opened, f"entries sent after the stop was requested: {sorted(opened)}"
    assert after["fill_count"] == before["fill_count"]
    assert all(rt.candles_handled[s] for s in TRADED)
