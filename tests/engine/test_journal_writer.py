"""Issue 7 defect 8: journal writes never block the event loop and never fail in the bot.

Old code wrote on the loop thread with a 5 s busy timeout: a locked journal stalled every bot
for 5 s per write and then raised, aborting ``_open`` after the fill and before the stop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from perpbot.domain.types import OrderResult, OrderSide
from perpbot.engine.entry import ENTRY_RECORD_WAIT_S
from perpbot.engine.journal import Journal
from perpbot.engine.journal_writer import JournalWriter
from perpbot.exchange.sim.adapter import SimExchange

from .factories import SYM, T0, flat
from .harness import LONG, World


def lock(path: Path) -> sqlite3.Connection:
    """Another process holding the database's write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def table_t(path: Path) -> sqlite3.Connection:
    """A WAL database with one table ``t (id)``, and a connection to read it."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    return db


def wait_written(w: JournalWriter, seq: int) -> None:
    deadline = time.monotonic() + 10
    while not w.written(seq) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_writes_return_at_once_while_the_database_is_locked_and_land_after(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    other = lock(path)
    t0 = time.perf_counter()
    for k in range(50):
        j.record_event(T0 + k, "test", SYM, f"event {k}")
    row = j.record_order_request(time_ms=T0, symbol=SYM, kind="ENTRY", order_type="MARKET", side="BUY", qty=1)
    assert time.perf_counter() - t0 < 0.5  # no write waited for the lock
    assert not j.flush(0.2)  # still queued: the wait is bounded
    other.execute("COMMIT")
    other.close()
    assert j.flush(10.0)
    assert [e.message for e in j.events("test")] == [f"event {k}" for k in range(50)]  # in order
    assert j.orders(SYM)[0].id == row
    j.close()


def test_a_statement_the_database_refuses_is_skipped_and_later_writes_still_land(tmp_path: Path) -> None:
    """A constraint error cannot pass by retrying. It used to end the writer thread, after which
    every later write stayed queued forever (and ``flush`` always timed out)."""
    path = tmp_path / "w.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    w = JournalWriter(str(path))
    w.submit("INSERT INTO t (id, v) VALUES (?, ?)", (1, "a"))
    w.submit("INSERT INTO t (id, v) VALUES (?, ?)", (1, "duplicate"))  # UNIQUE constraint
    w.submit("INSERT INTO t (id, v) VALUES (?, ?)", (2, "b"))
    assert w.flush(5.0)
    assert w.rejected == 1 and "UNIQUE" in w.last_error
    w.submit("INSERT INTO t (id, v) VALUES (?, ?)", (2**63, "too big"))  # SQLite cannot bind it
    w.submit("INSERT INTO t (id, v) VALUES (?, ?)", (3, "c"))
    assert w.flush(5.0)
    assert w.rejected == 2
    assert db.execute("SELECT id, v FROM t ORDER BY id").fetchall() == [(1, "a"), (2, "b"), (3, "c")]
    assert w.close()
    db.close()


def test_statements_queued_together_are_committed_in_one_transaction(tmp_path: Path) -> None:
    """Issue 13: one commit per statement was most of the writer's time (a backtest's ~4,300
    records, waited for by its report). 200 statements queued behind a lock land in order, in one
    or two transactions: the write-ahead log holds a few pages, not one page per commit."""
    path = tmp_path / "w.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    w = JournalWriter(str(path))
    other = lock(path)
    for k in range(200):
        w.submit("INSERT INTO t (id, v) VALUES (?, ?)", (k, f"v{k}"))
    other.execute("COMMIT")
    other.close()
    assert w.flush(10.0)
    assert db.execute("SELECT id FROM t ORDER BY rowid").fetchall() == [(k,) for k in range(200)]
    wal_pages = (path.with_name(path.name + "-wal").stat().st_size - 32) // (4096 + 24)
    assert wal_pages < 20  # one commit per statement: >= 200
    assert w.close()
    db.close()


def test_a_batch_stopped_by_a_failure_that_can_pass_lands_statement_by_statement(tmp_path: Path) -> None:
    """What lands, and when, is what one commit per statement gave: the statements before the
    failing one are written (and ``written``) while it is retried, the later ones after it."""
    path = tmp_path / "w.sqlite"
    db = table_t(path)
    w = JournalWriter(str(path))
    other = lock(path)
    first = w.submit("INSERT INTO t (id) VALUES (?)", (1,))
    stuck = w.submit("INSERT INTO later (id) VALUES (?)", (2,))  # no such table (yet): can pass
    w.submit("INSERT INTO t (id) VALUES (?)", (3,))
    other.execute("COMMIT")
    other.close()
    wait_written(w, first)
    assert w.written(first) and not w.written(stuck)
    assert db.execute("SELECT id FROM t").fetchall() == [(1,)]
    db.execute("CREATE TABLE later (id INTEGER PRIMARY KEY)")
    assert w.flush(10.0)
    assert db.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (3,)]
    assert db.execute("SELECT id FROM later").fetchall() == [(2,)]
    assert w.failures >= 1 and w.rejected == 0
    assert w.close()
    db.close()


def test_a_group_lands_whole_or_not_at_all(tmp_path: Path) -> None:
    """An amendment of a booked trade and the rows it counts are one group: were the counted rows
    written alone and the process killed, a restart would skip them (counted) while the trade
    never got them. So a group is one transaction, in a batch and in the one-at-a-time fallback:
    while its last statement cannot land, its first is not in the file either."""
    path = tmp_path / "w.sqlite"
    db = table_t(path)
    w = JournalWriter(str(path))
    other = lock(path)
    before = w.submit("INSERT INTO t (id) VALUES (?)", (1,))
    group = w.submit_group(
        [("INSERT INTO t (id) VALUES (?)", (2,), False), ("INSERT INTO later (id) VALUES (?)", (3,), False)]
    )
    other.execute("COMMIT")
    other.close()
    wait_written(w, before)
    time.sleep(0.1)  # the group is being retried meanwhile
    assert w.written(before) and not w.written(group)
    assert db.execute("SELECT id FROM t").fetchall() == [(1,)]  # not the group's first alone
    db.execute("CREATE TABLE later (id INTEGER PRIMARY KEY)")
    assert w.flush(10.0)
    assert db.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (2,)]
    assert db.execute("SELECT id FROM later").fetchall() == [(3,)]
    assert w.close()
    db.close()


def test_a_group_with_a_refused_statement_is_undone_whole(tmp_path: Path) -> None:
    """A group lands whole or not at all, a refusal included: the statements before the refused
    one are undone with it. Before, they were committed (a refused trade row left the executions
    it counted marked as counted, for a trade never booked). Lone statements around it land."""
    path = tmp_path / "w.sqlite"
    db = table_t(path)
    w = JournalWriter(str(path))
    insert = "INSERT INTO t (id) VALUES (?)"
    w.submit(insert, (1,))
    w.submit_group([(insert, (10,), False), (insert, (1,), False), (insert, (11,), False)])  # 1 again
    w.submit(insert, (2,))
    assert w.flush(5.0)
    assert w.rejected == 1
    assert db.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (2,)]
    assert w.close()
    db.close()


def test_a_group_is_never_split_between_two_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from perpbot.engine import journal_writer

    monkeypatch.setattr(journal_writer, "BATCH_MAX", 3)
    sizes: list[int] = []
    commit = JournalWriter._commit

    def recorded(
        self: JournalWriter, db: sqlite3.Connection, batch: list, ends: list | None = None, **kw: bool
    ) -> bool:
        sizes.append(len(batch))
        return commit(self, db, batch, ends, **kw)

    monkeypatch.setattr(JournalWriter, "_commit", recorded)
    path = tmp_path / "w.sqlite"
    db = table_t(path)
    w = JournalWriter(str(path))
    other = lock(path)
    insert = "INSERT INTO t (id) VALUES (?)"
    for k in (1, 2):
        w.submit(insert, (k,))
    w.submit_group([(insert, (k,), False) for k in (3, 4, 5)])
    w.submit(insert, (6,))
    other.execute("COMMIT")
    other.close()
    assert w.flush(10.0)
    assert sizes == [5, 1]  # the batch of 3 grew to the group's end
    assert db.execute("SELECT id FROM t ORDER BY id").fetchall() == [(k,) for k in range(1, 7)]
    assert w.close()
    db.close()


def test_journal_writes_made_together_are_one_group(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite")
    assert j._writer is not None
    groups: list[int] = []
    submit_group = j._writer.submit_group

    def recorded(statements: list) -> int:
        groups.append(len(statements))
        return submit_group(statements)

    j._writer.submit_group = recorded  # type: ignore[method-assign]
    with j.together():
        j.record_accounted(SYM, ["a", "b"], T0)
        j.record_event(T0, "test", SYM, "x")
    j.record_event(T0, "test", SYM, "y")
    with pytest.raises(ZeroDivisionError), j.together():  # a block that fails queues nothing
        j.record_event(T0, "test", SYM, "lost")
        _ = 1 / 0
    assert j.flush(5.0)
    assert groups == [2, 1] and [e.message for e in j.events("test")] == ["x", "y"]
    j.close()
    m = Journal()
    with m.together():  # no writer: executed at once, as always
        m.record_event(T0, "test", SYM, "z")
        assert len(m.events("test")) == 1


def test_memory_journal_stays_synchronous_and_background_needs_a_file() -> None:
    j = Journal()
    j.record_event(T0, "test", SYM, "x")
    assert j.flush(0.0) and len(j.events("test")) == 1
    with pytest.raises(ValueError):
        Journal(":memory:", background=True)


class LockedAfterTheEntryLeaves(SimExchange):
    """Another process takes the journal's write lock while the entry order is on its way (its
    request row is in the file: the entry waited for that)."""

    path: Path | None = None
    other: sqlite3.Connection | None = None

    async def market_order(self, symbol: str, side: OrderSide, quantity: float, **kw: Any) -> OrderResult:
        if not kw.get("reduce_only") and self.other is None and self.path is not None:
            self.other = lock(self.path)
        return await super().market_order(symbol, side, quantity, **kw)


async def test_a_locked_journal_never_keeps_the_stop_from_being_placed(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    w = World(flat(100, 4), journal=Journal(path), exchange_cls=LockedAfterTheEntryLeaves)
    ex: LockedAfterTheEntryLeaves = w.ex  # type: ignore[assignment]
    ex.path = path
    await w.start()
    await w.step()
    t0 = time.perf_counter()
    await w.step(LONG)  # entry; its fill, SL and TP while the journal is locked
    elapsed = time.perf_counter() - t0
    assert ex.other is not None and elapsed < 1.0
    pos = w.engine.position(SYM)
    assert pos is not None and w.bot.state.side is LONG
    assert {o.type.value for o in w.algo_orders()} == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}
    ex.other.execute("COMMIT")
    ex.other.close()
    assert w.journal.flush(10.0)
    assert [o.kind for o in w.journal.orders(SYM)] == ["ENTRY", "SL", "TP"]  # intent and outcome
    assert all(o.status != "REQUESTED" for o in w.journal.orders(SYM))


async def test_an_entry_whose_request_cannot_reach_the_journal_is_not_sent(tmp_path: Path) -> None:
    """Write-ahead: the entry order leaves only once its request row is in the file. Old code
    sent it while the row was still queued (another process held the lock): killed then, the
    process left a position, or a round trip, that no restart could find in its journal."""
    path = tmp_path / "journal.sqlite"
    w = World(flat(100, 5), journal=Journal(path))
    await w.start()
    await w.step()
    other = lock(path)
    t0 = time.perf_counter()
    await w.step(LONG)
    elapsed = time.perf_counter() - t0
    assert w.engine.position(SYM) is None and w.bot.state.side is None  # nothing sent
    assert not [f for f in w.engine.fills(SYM)] and not w.risk.is_open(SYM)
    assert ENTRY_RECORD_WAIT_S <= elapsed < ENTRY_RECORD_WAIT_S + 1.0  # the loop went on meanwhile
    other.execute("COMMIT")
    other.close()
    assert w.journal.flush(10.0)
    (rec,) = w.journal.orders(SYM, "ENTRY")
    assert rec.status == "REJECTED" and rec.order_id is None
    assert [e.kind for e in w.journal.events(symbol=SYM) if e.kind == "entry_not_sent"] == ["entry_not_sent"]
    await w.step(LONG)  # the journal is free again: the next signal enters
    assert w.bot.state.side is LONG


async def test_a_trade_row_and_the_funding_rows_it_counts_are_one_group(tmp_path: Path) -> None:
    """The funding rows a trade counts are accounted so that a restart never counts them again.
    Written apart from the trade's row, a process killed in between left them counted for a
    trade that was never booked: the restart booked the round trip from the venue's executions
    and skipped those rows, so the trade lacked its funding for good."""
    from perpbot.domain.types import CloseReason

    w = World(flat(100.0, 40), funding=[0.001] * 40, journal=Journal(tmp_path / "j.sqlite"))
    writer = w.journal._writer
    assert writer is not None
    groups: list[list[str]] = []
    submit_group = writer.submit_group

    def recorded(statements: list) -> int:
        groups.append([sql.split("(")[0].strip() for sql, _a, _m in statements])
        return submit_group(statements)

    writer.submit_group = recorded  # type: ignore[method-assign]
    await w.start()
    await w.run({1: LONG}, until=32)  # open across the 08:00 settlement (bar 32)
    await w.bot.close_position(CloseReason.END_OF_DATA)
    await w.ex.drain()
    assert w.bot.closed_trades[0].funding < 0
    booking = [g for g in groups if "INSERT INTO trades" in g]
    assert booking == [["INSERT OR IGNORE INTO accounted", "INSERT INTO trades"]]
    w.journal.close()


async def test_waiting_for_a_write_lets_the_loop_run_and_ends_when_it_is_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    other = lock(path)
    j.record_event(T0, "test", SYM, "x")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.ensure_future(ticker())
    assert not await j.durable(0.2)  # locked: not in the file, the loop kept running
    assert ticks >= 5
    waiting = asyncio.ensure_future(j.durable(5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(waiting, 5.0)
    task.cancel()
    assert await Journal().durable(0.0)  # no writer: every statement was executed as it was made
    j.close()


def test_writes_a_close_could_not_land_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Closing while another process holds the lock past the close's wait: the writes still
    queued are said at ERROR with their number (they used to be dropped silently)."""
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    other = lock(path)
    j.record_event(T0, "test", SYM, "x")
    j.record_event(T0, "test", SYM, "y")
    with caplog.at_level("ERROR", logger="perpbot.engine.journal"):
        j.close(timeout=0.2)
    assert any("2 write(s) not in the file" in r.getMessage() for r in caplog.records)
    other.execute("COMMIT")
    other.close()
    errors = len(caplog.records)
    j2 = Journal(path)
    j2.record_event(T0, "test", SYM, "z")
    with caplog.at_level("ERROR", logger="perpbot.engine.journal"):
        j2.close()  # free: everything lands, nothing to say
    assert len(caplog.records) == errors
