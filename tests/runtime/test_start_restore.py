"""Start-up restores the day's PnL from the journal before any bot decides (issue 10 §1: "one
``RiskManager``, with ``restore_from_journal``, so a restart on a losing day stays blocked").

The engine's tests restore the risk manager themselves; this one starts the real runtime against
the simulator, so it fails if the runtime stops doing it."""

from __future__ import annotations

import time
from pathlib import Path

from perpbot.domain.types import ClosedTrade, CloseReason, Side
from perpbot.engine.journal import Journal
from tests.runtime.opsenv import TRADED, runtime
from tests.runtime.simproc import Simulator

LOSS = -1_000_000.0  # far beyond any 5 % of the simulator's balance


async def test_a_restart_on_a_losing_day_starts_with_entries_blocked(sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    now = int(time.time() * 1000)
    journal = Journal(path)
    journal.record_trade(
        ClosedTrade(
            symbol=TRADED[0],
            side=Side.LONG,
            entry_time_ms=now - 2_000,
            exit_time_ms=now - 1_000,  # today (UTC), as the runtime's clock counts days
            entry_price=1.0,
            exit_price=1.0,
            quantity=1.0,
            realized_pnl=LOSS,
            entry_fee=0.0,
            exit_fee=0.0,
            funding=0.0,
            reason=CloseReason.SL,
        )
    )
    journal.close()
    rt = runtime(sim, path)
    await rt.start()
    try:
        assert rt.risk.daily_pnl == LOSS
        assert not await rt.risk.trading_allowed()
    finally:
        await rt.stop()
