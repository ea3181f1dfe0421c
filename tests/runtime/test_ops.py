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
from tests.runtime.opsenv import PERPBOT, cli_env, joined, run_cli, trading_runtime
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


async def _flatten(sim: Simulator, args: list[str], journal: Path, cwd: Path) -> tuple[int, str, str]:
    """``perpbot flatten ARGS --yes`` as a process. The simulator fills a MARKET order at the next
    candle's open, so the replay is advanced one bar whenever a close order rests."""
    proc = subprocess.Popen(
        [PERPBOT, "flatten", *args, "--yes", "--journal", str(journal)],
        env=cli_env(sim),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if (await asyncio.to_thread(sim.state))["open_orders"]:
                await asyncio.to_thread(sim.advance, 1)
            await asyncio.sleep(0.05)
        out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


async def test_status_reads_exchange_and_journal_while_a_run_owns_the_journal(
    sim: Simulator, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    async with trading_runtime(sim, journal) as (rt, positions):
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


async def test_flatten_while_a_run_owns_the_journal_is_done_once_by_the_running_bot(
    sim: Simulator, tmp_path: Path
) -> None:
    from perpbot.runtime.ops_desk import request_flatten

    journal = tmp_path / "journal.sqlite3"
    async with trading_runtime(sim, journal) as (rt, positions):
        sym = sorted(positions)[0]
        pos = positions[sym]
        # a request found after its expiry is answered and not acted upon
        (late,) = await request_flatten(journal, [sym], 0.001)
        assert (late.symbol, late.status) == (sym, "expired")
        assert rt.bots[sym].in_position

        code, out, err = await _flatten(sim, ["--symbol", sym], journal, tmp_path)
        assert code == 0, err
        assert "owns " in out and "the request goes to the running bot" in out
        side, qty = pos["side"], float(pos["quantity"])
        assert f"{sym}: closed by the running bot; booked {side} {qty:g} MANUAL" in out
        manual = [t for t in rt.bots[sym].closed_trades if t.reason is CloseReason.MANUAL]
        assert len(manual) == 1 and manual[0].quantity == pytest.approx(qty)
        rt.journal.flush()
        manual_rows = [t for t in _trades(journal) if t[3] == "MANUAL"]
        assert manual_rows == [(sym, side, pytest.approx(qty), "MANUAL")]
        done = [e.data for e in rt.journal.events("operator.flatten_done", sym)]
        assert [d["status"] for d in done if d is not None] == ["expired", "flat"]
        assert any("operator flatten" in t for t in rt.notifier.texts("info"))
        state = await asyncio.to_thread(sim.state)
        # every fill on the simulator belongs to one journaled trade or to a position still open
        assert state["fill_count"] == 2 * len(_trades(journal)) + len(state["positions"])
    # a restart within the request's lifetime never acts on an answered request again
    async with trading_runtime(sim, journal, trade=False) as (rt2, _):
        assert rt2.desk is not None
        await rt2.desk.poll()
        await joined(rt2)
        assert rt2.desk.handled == 0
        assert len(rt2.journal.events("operator.flatten_done")) == 2


async def test_flatten_closes_once_books_through_the_ledger_and_empties_both_books(
    sim: Simulator, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    async with trading_runtime(sim, journal) as (_, positions):
        pass  # stopped on the way out: the protection stays on the exchange
    sym = sorted(positions)[0]
    pos = positions[sym]
    before = _trades(journal)

    code, out, err = await _flatten(sim, ["--symbol", sym], journal, tmp_path)
    assert code == 0, err
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
    async with trading_runtime(sim, journal, trade=False) as (rt2, _):
        await rt2.reconcile_all()
        assert not rt2.bots[sym].in_position
    assert _trades(journal) == after

    # --all: the symbol already flat says so, every other open one is closed and booked once
    state = await asyncio.to_thread(sim.state)
    still = {p["symbol"]: p for p in state["positions"]}
    code, out, err = await _flatten(sim, ["--all"], journal, tmp_path)
    assert code == 0, err
    assert f"{sym}: already flat; 0 resting order(s) cancelled" in out
    for other, p in still.items():
        assert f"{other}: closed; booked {p['side']} {float(p['quantity']):g} MANUAL" in out
    final = _trades(journal)
    assert final[: len(after)] == after
    assert sorted(t[0] for t in final[len(after) :]) == sorted(still)
    state = await asyncio.to_thread(sim.state)
    assert state["positions"] == [] and state["algo_orders"] == [] and state["open_orders"] == []
    assert state["fill_count"] == 2 * len(final)


async def test_kill_switch_reset_is_taken_by_the_running_bot_at_its_next_candle(
    sim: Simulator, tmp_path: Path
) -> None:
    from tests.runtime.opsenv import advance

    journal = tmp_path / "journal.sqlite3"
    async with trading_runtime(sim, journal, trade=False) as (rt, _):
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
        assert any("kill switch reset by the operator" in t for t in rt.notifier.texts("info"))
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
