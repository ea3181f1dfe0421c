"""The operator commands as an operator runs them: real ``perpbot`` processes against a runtime
trading on a ``perpbot simulate`` child (real HTTP, WebSocket, ccxt)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from perpbot.domain.types import ClosedTrade, CloseReason, Side
from perpbot.engine.journal import Journal
from tests.runtime.opsenv import PERPBOT, cli_env, run_cli, runtime, trade_until_open
from tests.runtime.simproc import Simulator

SIM_SYMBOLS = ["XRPUSDT", "TRXUSDT", "BTCUSDT", "ETHUSDT"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator(SIM_SYMBOLS, 3)
    yield s
    s.stop()


def _trades(journal: Path) -> list[tuple[str, str, float, str]]:
    con = sqlite3.connect(journal)
    try:
        return con.execute("SELECT symbol, side, qty, reason FROM trades ORDER BY id").fetchall()
    finally:
        con.close()


async def test_status_reads_exchange_and_journal_while_a_run_owns_the_journal(
    sim: Simulator, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    rt = runtime(sim, journal)
    await rt.start()
    try:
        positions = {p["symbol"]: p for p in await trade_until_open(sim, rt)}
        res = await asyncio.to_thread(
            run_cli, ["status", "--json", "--journal", str(journal)], cli_env(sim), tmp_path
        )
        assert res.returncode == 0, res.stderr
        st = json.loads(res.stdout)
        assert st["running"] is True and st["mode"] == "custom"
        assert st["problems"] == []
        assert st["daily"]["base_balance"] == pytest.approx(rt.risk.base_balance)
        assert st["daily"]["pnl"] == pytest.approx(rt.risk.daily_pnl)
        assert st["daily"]["blocked"] is False
        rows = {r["symbol"]: r for r in st["symbols"]}
        assert sorted(rows) == ["TRXUSDT", "XRPUSDT"]
        for sym, row in rows.items():
            assert row["kill_switch"]["tripped"] is False
            pos = positions.get(sym)
            if pos is None:
                assert row["exchange"] is None and row["journal"] is None and row["protection"] is None
                continue
            bot = rt.bots[sym].state
            assert row["exchange"]["side"] == pos["side"] == bot.side.value
            assert row["exchange"]["qty"] == pytest.approx(float(pos["quantity"]))
            assert row["journal"]["side"] == pos["side"]
            assert row["journal"]["qty"] == pytest.approx(float(pos["quantity"]))
            prot = row["protection"]
            assert (prot["sl"], prot["tp"]) == (pytest.approx(bot.sl_price), pytest.approx(bot.tp_price))
            assert prot["reduce_only"] and prot["full_qty"] and not prot["legacy"]
            assert row["problems"] == []

        text = await asyncio.to_thread(run_cli, ["status", "--journal", str(journal)], cli_env(sim), tmp_path)
        assert text.returncode == 0, text.stderr
        assert "(a perpbot run holds this journal)" in text.stdout
        for sym, pos in positions.items():
            line = next(x for x in text.stdout.splitlines() if x.strip().startswith(f"{sym}:"))
            assert f"{pos['side']} " in line and " OK;" in line and "kill switch ok" in line
        assert text.stdout.rstrip().endswith("no problems")

        # flatten is refused while the run owns the journal; nothing is sent
        refused = await asyncio.to_thread(
            run_cli, ["flatten", "--all", "--yes", "--journal", str(journal)], cli_env(sim), tmp_path
        )
        assert refused.returncode == 2
        assert len(refused.stderr.strip().splitlines()) == 1
        assert "owns this journal; stop it first" in refused.stderr
        state = await asyncio.to_thread(sim.state)
        assert {p["symbol"] for p in state["positions"]} == set(positions)

        # another journal (it knows nothing of these positions): every one is flagged
        other = tmp_path / "other.sqlite3"
        Journal(other).close()
        res = await asyncio.to_thread(
            run_cli, ["status", "--json", "--journal", str(other)], cli_env(sim), tmp_path
        )
        assert res.returncode == 0, res.stderr
        st = json.loads(res.stdout)
        assert st["running"] is False
        for sym, pos in positions.items():
            qty = float(pos["quantity"])
            want = f"exchange has {pos['side']} {qty:g} but the journal shows no open position"
            assert f"{sym}: {want}" in st["problems"]
    finally:
        await rt.stop()


async def test_flatten_closes_once_books_through_the_ledger_and_empties_both_books(
    sim: Simulator, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    rt = runtime(sim, journal)
    await rt.start()
    try:
        positions = {p["symbol"]: p for p in await trade_until_open(sim, rt)}
    finally:
        await rt.stop()  # protection stays on the exchange
    sym = sorted(positions)[0]
    pos = positions[sym]
    before = _trades(journal)

    proc = subprocess.Popen(
        [PERPBOT, "flatten", "--symbol", sym, "--yes", "--journal", str(journal)],
        env=cli_env(sim),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The simulator fills a MARKET order at the next candle's open: wait for the close order.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (await asyncio.to_thread(sim.state))["open_orders"]:
                await asyncio.to_thread(sim.advance, 1)
                break
            await asyncio.sleep(0.05)
        out, err = await asyncio.to_thread(proc.communicate, timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    side = pos["side"]
    assert f"{sym}: closed; booked {side} {float(pos['quantity']):g} MANUAL" in out
    assert "resting order(s) cancelled" in out

    state = await asyncio.to_thread(sim.state)
    assert sym not in {p["symbol"] for p in state["positions"]}
    assert not [a for a in state["algo_orders"] if a["symbol"] == sym]
    assert state["open_orders"] == []
    for p in state["positions"]:  # the other symbol keeps its position and its protection
        kinds = sorted(a["orderType"] for a in state["algo_orders"] if a["symbol"] == p["symbol"])
        assert kinds == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]

    after = _trades(journal)
    assert after[: len(before)] == before
    assert after[len(before) :] == [(sym, side, pytest.approx(float(pos["quantity"])), "MANUAL")]
    # every fill on the simulator belongs to one journaled trade or to a position still open
    assert state["fill_count"] == 2 * len(after) + len(state["positions"])

    # a restart on the same journal does not book the close a second time
    rt2 = runtime(sim, journal)
    await rt2.start()
    try:
        await rt2.reconcile_all()
        assert not rt2.bots[sym].in_position
    finally:
        await rt2.stop()
    assert _trades(journal) == after

    again = await asyncio.to_thread(
        run_cli, ["flatten", "--symbol", sym, "--yes", "--journal", str(journal)], cli_env(sim), tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert f"{sym}: already flat; 0 resting order(s) cancelled" in again.stdout
    assert _trades(journal) == after


async def test_kill_switch_reset_is_taken_by_the_running_bot_at_its_next_candle(
    sim: Simulator, tmp_path: Path
) -> None:
    from tests.runtime.opsenv import advance

    journal = tmp_path / "journal.sqlite3"
    rt = runtime(sim, journal)
    await rt.start()
    try:
        ks = rt.bots["XRPUSDT"].kill_switch
        now = rt.clock.now_ms()
        for i in range(8):  # eight losers trip the fast rule (journaled by the kill switch itself)
            t = ClosedTrade(
                "XRPUSDT", Side.LONG, now, now + i, 1.0, 0.9, 1.0, -0.1, 0.0, 0.0, 0.0, CloseReason.SL
            )
            ks.record(t, now)
        assert ks.tripped
        res = await asyncio.to_thread(
            run_cli,
            ["kill-switch", "reset", "--symbol", "XRPUSDT", "--journal", str(journal)],
            cli_env(sim),
            tmp_path,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("XRPUSDT: kill switch reset (was: fast: last 8 trades all net-negative)")
        assert ks.tripped  # not yet: the running bot takes it at its next candle of the symbol
        await advance(sim, rt, 1)
        assert not ks.tripped
        events = rt.journal.events("kill_switch.reset", "XRPUSDT")
        assert len(events) == 1 and events[0].data is not None and events[0].data["by"] == "operator"
        st = rt.journal.kill_switch_state("XRPUSDT")
        assert st is not None and not st.tripped

        again = await asyncio.to_thread(
            run_cli,
            ["kill-switch", "reset", "--symbol", "XRPUSDT", "--journal", str(journal)],
            cli_env(sim),
            tmp_path,
        )
        assert again.returncode == 0 and "not tripped; nothing to reset" in again.stdout
    finally:
        await rt.stop()
