"""The journal side of the operator commands: what the journal believes is open, today's PnL
against the daily-loss limit, kill switches, the read-only guarantee and the audited reset."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from perpbot.domain.types import ClosedTrade, CloseReason, Side
from perpbot.engine.journal import Journal
from perpbot.engine.kill_switch import KillSwitch
from perpbot.errors import ConfigError, DataError
from perpbot.runtime.guard import JournalLock
from perpbot.runtime.ops_journal import JournalReader, lock_holder, reset_kill_switch

T0 = 1_750_000_000_000  # 2025-06-15 15:06:40 UTC
DAY = 86_400_000


def _entry(j: Journal, sym: str, side: str, qty: float, t: int, cid: str) -> None:
    row = j.record_order_request(
        time_ms=t, symbol=sym, kind="ENTRY", order_type="MARKET", side=side, qty=qty, client_id=cid
    )
    j.record_order_result(row, time_ms=t, status="FILLED", order_id=7, avg_price=2.0, executed_qty=qty)


def _trade(j: Journal, sym: str, entry_t: int, exit_t: int, net: float) -> None:
    j.record_trade(
        ClosedTrade(sym, Side.LONG, entry_t, exit_t, 2.0, 2.1, 10.0, net, 0.0, 0.0, 0.0, CloseReason.TP)
    )


def test_a_filled_entry_without_a_later_trade_is_open_and_a_booked_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    with Journal(path) as j:
        _entry(j, "XRPUSDT", "BUY", 10.0, T0, "pb-x-1-entry")
        _entry(j, "TRXUSDT", "SELL", 5.0, T0, "pb-t-1-entry")
        _trade(j, "TRXUSDT", T0 + 5, T0 + 900_000, 1.5)
        # an entry that never filled does not count
        j.record_order_request(
            time_ms=T0 + 10, symbol="DOGEUSDT", kind="ENTRY", order_type="MARKET", side="BUY", qty=3.0
        )
    with JournalReader(path) as r:
        pos = r.position("XRPUSDT")
        assert pos is not None and (pos.side, pos.qty, pos.entry_price, pos.source) == (
            "LONG",
            10.0,
            2.0,
            "entry",
        )
        assert r.position("TRXUSDT") is None
        assert r.position("DOGEUSDT") is None
        assert r.symbols() == ["DOGEUSDT", "TRXUSDT", "XRPUSDT"]


def test_an_adopted_position_is_open_until_a_trade_closes_after_it(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    with Journal(path) as j:
        j.record_event(T0, "position_adopted", "XRPUSDT", "adopted SHORT qty 12.0 entry 0.61", {})
    with JournalReader(path) as r:
        pos = r.position("XRPUSDT")
        assert pos is not None and (pos.side, pos.qty, pos.entry_price, pos.source) == (
            "SHORT",
            12.0,
            0.61,
            "adopted",
        )
    with Journal(path) as j:
        _trade(j, "XRPUSDT", T0 - 1000, T0 + 60_000, -0.4)
    with JournalReader(path) as r:
        assert r.position("XRPUSDT") is None


def test_daily_loss_counts_todays_trades_against_the_journaled_base_balance(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    with Journal(path) as j:
        j.record_event(T0 - DAY, "risk.base_balance_set", "", "base", {"base_balance": 1000.0})
        _trade(j, "XRPUSDT", T0 - DAY, T0 - DAY + 1, -500.0)  # yesterday: not today's
        _trade(j, "XRPUSDT", T0, T0 + 1, -30.0)
        _trade(j, "TRXUSDT", T0, T0 + 2, -10.0)
    with JournalReader(path) as r:
        d = r.daily_loss(T0 + 10)
        assert (d.day, d.pnl, d.base_balance, d.limit, d.blocked) == (
            "2025-06-15",
            -40.0,
            1000.0,
            50.0,
            False,
        )
    with Journal(path) as j:
        _trade(j, "TRXUSDT", T0, T0 + 3, -10.0)
    with JournalReader(path) as r:
        assert r.daily_loss(T0 + 10).blocked  # -50 of 1000: the 5 % limit is reached


def test_the_reader_cannot_write_and_refuses_what_is_not_a_current_journal(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    Journal(path).close()
    with JournalReader(path) as r, pytest.raises(sqlite3.OperationalError, match="readonly"):
        r._con.execute("DELETE FROM trades")
    with pytest.raises(ConfigError, match="no journal"):
        JournalReader(tmp_path / "missing.sqlite3")
    assert not (tmp_path / "missing.sqlite3").exists()  # never created by a reader
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataError, match="not a perpbot journal"):
        JournalReader(garbage)
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match="journal format 99 written by a newer perpbot"):
        JournalReader(path)


def test_lock_holder_names_the_run_and_never_takes_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    assert lock_holder(path) is None  # no lock file: nobody runs
    lock = JournalLock(path).acquire()
    try:
        assert lock_holder(path) is not None and lock_holder(path).startswith("pid ")
    finally:
        lock.release()
    assert lock_holder(path) is None
    JournalLock(path).acquire().release()  # the probe left nothing behind


def test_reset_clears_the_switch_with_an_audit_event_and_the_next_boot_honours_it(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    with Journal(path) as j:
        for i in range(8):
            _trade(j, "XRPUSDT", T0 + i, T0 + i + 1, -1.0)
        ks = KillSwitch("XRPUSDT", j)
        assert ks.boot(T0 + 100) == "fast: last 8 trades all net-negative"
    line = reset_kill_switch(path, "XRPUSDT", T0 + 200)
    assert line == (
        "XRPUSDT: kill switch reset (was: fast: last 8 trades all net-negative); "
        "trades up to #8 no longer count"
    )
    assert (
        reset_kill_switch(path, "XRPUSDT", T0 + 300)
        == "XRPUSDT: kill switch is not tripped; nothing to reset"
    )
    with Journal(path) as j:
        ev = j.events("kill_switch.reset", "XRPUSDT")
        assert len(ev) == 1 and ev[0].time_ms == T0 + 200
        assert ev[0].data == {
            "by": "operator",
            "since_trade_id": 8,
            "was": "fast: last 8 trades all net-negative",
        }
        ks = KillSwitch("XRPUSDT", j)
        assert ks.boot(T0 + 400) is None and not ks.tripped  # the old losers no longer count


def _booted_after_losses(j: Journal, losses: int) -> KillSwitch:
    """XRPUSDT's kill switch booted on a journal of ``losses`` losing trades (8 trip it)."""
    for i in range(losses):
        _trade(j, "XRPUSDT", T0 + i, T0 + i + 1, -1.0)
    ks = KillSwitch("XRPUSDT", j)
    ks.boot(T0 + 100)
    return ks


def test_a_running_kill_switch_takes_only_a_reset_written_by_the_operator(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    with Journal(path) as j:
        ks = _booted_after_losses(j, 8)
        assert ks.take_operator_reset(T0 + 150) is False  # its own trip (queued or written): kept
        assert ks.tripped
        assert j.flush()  # the trip is in the file before an operator can see it and reset it
        assert ks.take_operator_reset(T0 + 160) is False
        reset_kill_switch(path, "XRPUSDT", T0 + 200)  # another connection, as the CLI process
        assert ks.take_operator_reset(T0 + 250) is True
        assert not ks.tripped and ks.reason == ""
        assert ks.take_operator_reset(T0 + 260) is False


def test_the_per_candle_reset_check_never_waits_for_the_journal_writer(tmp_path: Path) -> None:
    """The check runs on the event loop at every candle of a tripped symbol: it must not wait for
    the writer thread (issue 10). While the bot's own trip is still queued it says "no reset yet"
    at once; once the trip is in the file it reads the row as it stands, with no flush."""
    path = tmp_path / "j.sqlite3"
    with Journal(path) as j:
        ks = _booted_after_losses(j, 7)
        assert not ks.tripped
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer thread's next statement waits for this lock
        try:
            loser = ClosedTrade(
                "XRPUSDT", Side.LONG, T0 + 7, T0 + 8, 2.0, 2.1, 10.0, -1.0, 0.0, 0.0, 0.0, CloseReason.TP
            )
            j.record_trade(loser)
            assert ks.record(loser, T0 + 110) is not None and ks.tripped  # trip queued, not written
            t = time.monotonic()
            assert ks.take_operator_reset(T0 + 120) is False
            assert time.monotonic() - t < 0.5  # the writer is stuck for up to its 5 s busy timeout
            assert ks.tripped
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert j.flush()

        def no_flush(timeout: float) -> bool:
            raise AssertionError("the per-candle check waited for the writer")

        flush = j._writer.flush  # type: ignore[union-attr]
        j._writer.flush = no_flush  # type: ignore[union-attr,method-assign]
        try:
            assert ks.take_operator_reset(T0 + 150) is False  # its own trip is in the file: kept
        finally:
            j._writer.flush = flush  # type: ignore[union-attr,method-assign]
        reset_kill_switch(path, "XRPUSDT", T0 + 200)
        assert ks.take_operator_reset(T0 + 250) is True and not ks.tripped
