"""SQLite journal: WAL, commit-before-return, round trips, the readers the restart path uses."""

from __future__ import annotations

import sqlite3
import time
from datetime import date
from pathlib import Path

import pytest

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import ClosedTrade, CloseReason, OrderSide
from perpbot.engine.journal import Journal

from .factories import T0, closed_trade, order_update

DAY = 86_400_000


def trade(
    net: float, *, sym: str = "XRPUSDT", exit_ms: int = T0 + 3_600_000, reason: CloseReason | None = None
) -> ClosedTrade:
    return closed_trade(
        net,
        symbol=sym,
        entry_ms=exit_ms - 900_000,
        exit_ms=exit_ms,
        qty=10.0,
        entry_fee=0.1,
        exit_fee=0.2,
        reason=reason or CloseReason.SL,
    )


def fill(order_id: int, trade_id: int, *, qty: float = 5.0) -> OrderTradeUpdate:
    return order_update(order_id, trade_id, qty=qty, price=0.5, fee=0.01, side=OrderSide.BUY, cid="c")


def test_file_journal_is_wal_and_commits_in_order_once_flushed(tmp_path: Path) -> None:
    path = tmp_path / "j" / "journal.sqlite"
    j = Journal(path)
    assert j.journal_mode == "wal"
    j.record_event(T0, "risk.test", "XRPUSDT", "hello", {"a": 1})
    row_id = j.record_order_request(
        time_ms=T0, symbol="XRPUSDT", kind="ENTRY", order_type="MARKET", side="BUY", qty=10, client_id="x"
    )
    j.record_trade(trade(-1.0))
    # The writer thread commits them in order; a second connection (the dashboard, or the
    # process after a crash) sees them once the bounded flush returned.
    assert j.flush(5.0)
    other = sqlite3.connect(path)
    assert other.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    assert other.execute("SELECT status FROM orders WHERE id = ?", (row_id,)).fetchone()[0] == "REQUESTED"
    assert other.execute("SELECT COUNT(*) FROM trades").fetchone()[0] == 1
    other.close()
    j.close()


def test_order_intent_then_result() -> None:
    j = Journal()
    rid = j.record_order_request(
        time_ms=T0,
        symbol="XRPUSDT",
        kind="SL",
        order_type="STOP_MARKET",
        side="SELL",
        qty=10,
        client_id="pbSL-1",
        trigger_price=0.48,
        reason="attempt 1",
    )
    j.record_order_result(rid, time_ms=T0 + 5, status="NEW", algo_id=9001)
    rid2 = j.record_order_request(
        time_ms=T0, symbol="XRPUSDT", kind="ENTRY", order_type="MARKET", side="BUY", qty=10
    )
    j.record_order_result(rid2, time_ms=T0 + 5, status="ERROR", reason="-2019: Margin is insufficient.")
    sl, entry = j.orders("XRPUSDT")
    assert (sl.status, sl.algo_id, sl.trigger_price, sl.reason) == ("NEW", 9001, 0.48, "attempt 1")
    assert (entry.status, entry.reason) == ("ERROR", "-2019: Margin is insufficient.")
    assert j.last_order("XRPUSDT", ("ENTRY",)) == entry
    assert j.last_order("TRXUSDT", ("ENTRY",)) is None


def test_fills_are_stored_once_per_execution() -> None:
    j = Journal()
    j.record_fill(fill(1, 11))
    j.record_fill(fill(1, 11))  # redelivered
    j.record_fill(fill(1, 12))
    assert j.fill_count("XRPUSDT") == 2
    assert sum(f[4] for f in j.fills_of_order("XRPUSDT", 1)) == pytest.approx(0.02)


def test_an_execution_read_from_rest_is_a_fill_row_that_its_report_completes() -> None:
    # userTrades gave it (no report came): stored with status REST, found by order id, not by a
    # client id it does not carry; its report arriving after all is the same execution, whose
    # row then carries the report's fields (client id, status); a REST read of a reported
    # execution changes nothing.
    from perpbot.engine.bot_base import Execution

    j = Journal()
    ex = Execution(order_id=1, trade_id=11, side=OrderSide.BUY, qty=2.0, price=0.5, realized_pnl=0.0,
                   commission=0.01, time_ms=1_000, rest=True)  # fmt: skip
    j.record_rest_execution("XRPUSDT", ex)
    assert j.fills_of_order("XRPUSDT", 1) == [(1_000, 11, 2.0, 0.5, 0.01)]
    assert j.fills_of_client_id("XRPUSDT", "pb-1") == []
    assert j._q("SELECT status FROM fills WHERE trade_id = 11", ()).fetchone()[0] == "REST"
    report = fill(1, 11)
    j.record_fill(report)
    assert j.fill_count("XRPUSDT") == 1
    assert j.fills_of_client_id("XRPUSDT", "c") == [
        (report.trade_time_ms or report.event_time_ms, 11, 5.0, 0.5, 0.01)
    ]
    assert j._q("SELECT status FROM fills WHERE trade_id = 11", ()).fetchone()[0] == report.status.value
    j.record_rest_execution("XRPUSDT", ex)  # read again from userTrades: the report's row stays
    assert j.fills_of_client_id("XRPUSDT", "c")[0][2] == 5.0


def test_trades_round_trip_and_readers() -> None:
    j = Journal()
    pnls = [-1.0, 2.0, -3.0, 4.0]
    for p in pnls:
        j.record_trade(trade(p))
    j.record_trade(trade(9.0, sym="TRXUSDT"))
    got = j.closed_trades("XRPUSDT")
    assert [t.net_pnl for t in got] == pytest.approx(pnls)
    assert got[0] == trade(-1.0)
    assert len(j.closed_trades()) == 5
    assert [p for _id, p in j.recent_pnls("XRPUSDT", 2)] == pytest.approx([-3.0, 4.0])
    first_two = j.last_trade_id("XRPUSDT") - 2
    assert [p for _id, p in j.recent_pnls("XRPUSDT", 10, after_id=first_two)] == pytest.approx([-3.0, 4.0])


def test_daily_pnl_by_utc_exit_day() -> None:
    j = Journal()
    j.record_trade(trade(-2.0, exit_ms=T0 + 10))
    j.record_trade(trade(-3.0, exit_ms=T0 + DAY - 1))
    j.record_trade(trade(5.0, exit_ms=T0 + DAY))  # next day
    assert j.daily_pnl(date(2024, 1, 1)) == pytest.approx(-5.0)
    assert j.daily_pnl(date(2024, 1, 2)) == pytest.approx(5.0)
    assert j.daily_pnl(date(2024, 1, 3)) == 0.0


def test_kill_switch_state_upsert() -> None:
    j = Journal()
    assert j.kill_switch_state("XRPUSDT") is None
    j.set_kill_switch("XRPUSDT", tripped=True, reason="fast", time_ms=T0, since_trade_id=0)
    j.set_kill_switch("XRPUSDT", tripped=False, reason="", time_ms=T0 + 1, since_trade_id=7)
    s = j.kill_switch_state("XRPUSDT")
    assert s is not None and not s.tripped and s.since_trade_id == 7


def test_events_json_and_prefix_filter() -> None:
    j = Journal()
    j.record_event(T0, "risk.daily_reset", "", "reset", {"previous_daily_pnl": -1.5})
    j.record_event(T0, "kill_switch.trip", "XRPUSDT", "fast", None)
    assert [e.kind for e in j.events("risk.")] == ["risk.daily_reset"]
    assert j.events("risk.daily_reset")[0].data == {"previous_daily_pnl": -1.5}
    assert j.events(symbol="XRPUSDT")[0].data is None


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    with Journal(path) as j:
        j.record_trade(trade(-1.0))
        j.set_kill_switch("XRPUSDT", tripped=True, reason="fast", time_ms=T0, since_trade_id=0)
    with Journal(path) as j2:
        assert len(j2.closed_trades()) == 1
        assert j2.kill_switch_state("XRPUSDT").tripped  # type: ignore[union-attr]


def test_record_overhead_is_small(tmp_path: Path) -> None:
    """One transaction per record stays cheap enough for backtests (WAL + synchronous=NORMAL)."""
    j = Journal(tmp_path / "bench.sqlite")
    n = 2000
    t = time.perf_counter()
    for i in range(n):
        j.record_fill(fill(i, i))
    per_record = (time.perf_counter() - t) / n
    assert j.fill_count() == n
    assert per_record < 1e-3  # typically ~10-30 µs; generous bound for slow CI disks
