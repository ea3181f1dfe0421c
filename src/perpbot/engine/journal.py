"""The trading journal: every order, fill, closed trade and risk/kill-switch event in SQLite.

Why write-ahead: the bot persists its *intent* before acting (an order row with status
REQUESTED), acts, then persists the *result*; after a crash the journal shows what was attempted
even when the exchange's answer never arrived. A file journal's ``record_*`` methods queue their
statements, in order, for the writer thread (``journal_writer``: the event loop never waits on
SQLite's lock), which commits them within a millisecond when the database is free; the file is
always a prefix of what was queued. What must be in the file before the bot acts awaits it
(``durable``): an entry's request, without which a restart could not find the round trip. The
protective orders never wait (a stop first). A memory journal (backtests) executes each
statement as it is made.

Why SQLite in WAL mode with ``synchronous=NORMAL``: one writer (the bot process) and concurrent
readers (dashboard, CLI) without blocking; NORMAL skips the fsync per commit (a power cut may
lose the last transactions, never corrupt the file), which keeps a record at a few tens of
microseconds so the same journal serves backtests. ``":memory:"`` works for tests/backtests.

The kill switch and the day's PnL are rebuilt from this file after a restart
(``kill_switch_state``, ``recent_pnls``, ``daily_pnl``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import ClosedTrade
from perpbot.engine.journal_reads import JournalReads
from perpbot.engine.journal_records import (
    reported_fill_row,
    rest_fill_row,
)
from perpbot.engine.journal_schema import (
    REPORTED_FILL,
    REST_FILL,
    SCHEMA,
    add_missing_columns,
)
from perpbot.engine.journal_writer import JournalWriter

if TYPE_CHECKING:  # bot_base imports this module
    from perpbot.engine.bot_base import Execution


log = logging.getLogger(__name__)
CLOSE_WAIT_S = 10.0  # how long ``close`` waits for the queued writes
READ_WAIT_S = 2.0  # a reader waits at most this long for the queued writes (bounded)


class Journal(JournalReads):
    """SQLite journal; one per process (or per backtest). Use from the loop thread.

    ``background`` (default: on for a file, off for ``":memory:"``): writes go to a writer thread
    (``journal_writer``) so that the loop never blocks on SQLite and a locked database never makes
    a write raise inside the bot (issue 7 defect 8). Row ids of orders and trades are allocated
    here, so ``record_order_request`` / ``record_trade`` still return them at once. Readers wait
    (bounded, ``READ_WAIT_S``) for the writes queued before them.
    """

    def __init__(self, path: str | Path = ":memory:", *, background: bool | None = None) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, every statement commits on its own (one transaction
        # per record). cached_statements keeps the prepared statements of the hot inserts.
        self._db = sqlite3.connect(self.path, isolation_level=None, cached_statements=64)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        add_missing_columns(self._db)
        if background is None:
            background = self.path != ":memory:"
        if background and self.path == ":memory:":
            raise ValueError("a background journal needs a file (':memory:' is per connection)")
        self._writer = JournalWriter(self.path) if background else None
        # A journal dropped without ``close()`` still writes what it queued and stops its thread
        # when it is collected (a leaked writer thread would also keep ``chart_pool`` from forking).
        self._finalizer = weakref.finalize(self, self._writer.close) if self._writer is not None else None
        self._next_order = self._max_id("orders") + 1
        self._next_trade = self._max_id("trades") + 1
        self._group: list[tuple[str, Any, bool]] | None = None  # ``together``'s writes

    def _max_id(self, table: str) -> int:
        return int(self._db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0])

    @contextmanager
    def together(self) -> Iterator[None]:
        """The writes made inside (no ``await`` in between) are committed in one transaction: a
        process killed meanwhile leaves all of them or none (``journal_writer``, "Groups"); a
        block that raises queues none of them.
        Without a writer each statement is executed at once, as always (a backtest is never
        killed half-way through an amendment)."""
        if self._writer is None or self._group is not None:
            yield
            return
        self._group = []
        try:
            yield
        except BaseException:
            self._group = None  # all or none: what the failed block wrote is not queued
            raise
        group, self._group = self._group, None
        if group:
            self._writer.submit_group(group)

    def _write(self, sql: str, args: Any, *, many: bool = False) -> int:
        """Queue (or, without a writer, execute) one statement; its sequence number for
        ``written`` (0 when written at once)."""
        if self._group is not None:
            self._group.append((sql, args, many))
            return 0  # ``written`` is not asked of a grouped write
        if self._writer is not None:
            return self._writer.submit(sql, args, many)
        if many:
            self._db.executemany(sql, args)
        else:
            self._db.execute(sql, args)
        return 0

    def written(self, seq: int) -> bool:
        """The write numbered ``seq`` (``_write``'s return) is in the file. Never waits."""
        return self._writer is None or self._writer.written(seq)

    async def durable(self, timeout: float) -> bool:
        """Until every write queued so far is in the file, without blocking the event loop (the
        writer thread wakes it); False when ``timeout`` ran out first. At once without a writer
        (each statement is executed as it is made)."""
        if self._writer is None:
            return True
        return await self._writer.wait_written(self._writer.submitted, timeout)

    def flush(self, timeout: float = READ_WAIT_S) -> bool:
        """Wait (bounded) for the queued writes; True when all are in the file."""
        return True if self._writer is None else self._writer.flush(timeout)

    def _q(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        """A read, after the writes queued before it (bounded wait)."""
        if self._writer is not None:
            self._writer.flush(READ_WAIT_S)
        return self._db.execute(sql, args)

    @staticmethod
    def reserve(path: str | Path) -> None:
        """Create the (empty) file ``copy_to`` will fill, and its folder: a path that cannot be
        written fails here, before the work whose record it is to hold."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sqlite3.connect(path).close()

    def copy_to(self, path: str | Path) -> None:
        """Write the whole journal, as it is now, into a new WAL file at ``path`` (SQLite's
        online backup): a backtest keeps its private journal in memory while it runs, with no
        writer thread taking the loop's GIL for each statement (issue 13), and leaves this file."""
        self.flush()
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # as a file journal's own folder
        dest = sqlite3.connect(path, isolation_level=None)
        try:
            self._db.backup(dest)
            dest.execute("PRAGMA journal_mode=WAL")
        finally:
            dest.close()

    def close(self, timeout: float = CLOSE_WAIT_S) -> None:
        """Write what is queued (waiting at most ``timeout``), stop the writer, close the file.
        Writes still queued then (another process held the lock all along) are lost with the
        process: said at ERROR, with their number, rather than silently."""
        if self._finalizer is not None and self._finalizer.detach() is not None:
            writer = self._writer
            assert writer is not None
            left = 0 if writer.close(timeout) else writer.pending
            if left:
                log.error(
                    "journal %s: %d write(s) not in the file after %.0f s; lost", self.path, left, timeout
                )
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def journal_mode(self) -> str:
        return str(self._q("PRAGMA journal_mode").fetchone()[0])

    # ================================================================ writers
    def record_order_request(
        self,
        *,
        time_ms: int,
        symbol: str,
        kind: str,
        order_type: str,
        side: str,
        qty: float,
        client_id: str = "",
        trigger_price: float | None = None,
        reason: str = "",
    ) -> int:
        """Persist the intent before sending; returns the row id for ``record_order_result``."""
        row = self._next_order
        self._next_order += 1
        self._write(
            "INSERT INTO orders (id, time_ms, symbol, kind, client_id, order_type, side, qty, trigger_price,"
            " status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'REQUESTED', ?)",
            (row, time_ms, symbol, kind, client_id, order_type, side, qty, trigger_price, reason),
        )
        return row

    def record_order_result(
        self,
        row_id: int,
        *,
        time_ms: int,
        status: str,
        order_id: int | None = None,
        algo_id: int | None = None,
        avg_price: float | None = None,
        executed_qty: float | None = None,
        reason: str | None = None,
    ) -> None:
        """Persist the exchange's answer (or ``status='ERROR'`` and the error as ``reason``)."""
        self._write(
            "UPDATE orders SET status = ?, order_id = COALESCE(?, order_id), algo_id = COALESCE(?, algo_id),"
            " avg_price = COALESCE(?, avg_price), executed_qty = COALESCE(?, executed_qty),"
            " reason = COALESCE(?, reason), result_time_ms = ? WHERE id = ?",
            (status, order_id, algo_id, avg_price, executed_qty, reason, time_ms, row_id),
        )

    def record_fill(self, ev: OrderTradeUpdate) -> None:
        """One execution report with a fill (``x`` = TRADE or CALCULATED); stored once
        (``REPORTED_FILL``)."""
        self._write(
            REPORTED_FILL,
            reported_fill_row(ev),
        )

    def record_rest_execution(self, symbol: str, ex: Execution) -> None:
        """One execution learned from ``userTrades`` (its report never came: a silent or lost
        stream), stored as a fill row before it is counted, like a reported one; status ``REST``
        (no report says the order's status), the client id when known, else empty, reduce-only
        unknown (0). A row of the same execution already stored is kept, and its report coming
        after all replaces this one (``REPORTED_FILL``)."""
        self._write(
            REST_FILL,
            rest_fill_row(symbol, ex),
        )

    def record_trade(self, trade: ClosedTrade, *, entry_order_id: int = 0) -> int:
        """A finished round trip; returns its id (the kill switch's reset baseline uses ids).
        ``entry_order_id`` names the entry it booked, so that a restart can tell a booked entry
        from one a dead process left unbooked (``trade_of_entry``)."""
        tid = self._next_trade
        self._next_trade += 1
        self._write(
            "INSERT INTO trades (id, symbol, side, entry_time_ms, exit_time_ms, entry_price, exit_price, qty,"
            " realized_pnl, entry_fee, exit_fee, funding, net_pnl, reason, entry_order_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tid,
                trade.symbol,
                trade.side.value,
                trade.entry_time_ms,
                trade.exit_time_ms,
                trade.entry_price,
                trade.exit_price,
                trade.quantity,
                trade.realized_pnl,
                trade.entry_fee,
                trade.exit_fee,
                trade.funding,
                trade.net_pnl,
                trade.reason.value,
                entry_order_id,
            ),
        )
        return tid

    def record_event(
        self,
        time_ms: int,
        kind: str,
        symbol: str,
        message: str,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Risk, kill-switch, alert and reconciliation events (``data`` stored as JSON)."""
        payload = None if data is None else json.dumps(dict(data), default=str, sort_keys=True)
        self._write(
            "INSERT INTO events (time_ms, kind, symbol, message, data) VALUES (?, ?, ?, ?, ?)",
            (time_ms, kind, symbol, message, payload),
        )

    def amend_trade_funding(self, trade_id: int, funding: float, net_pnl: float) -> None:
        """Funding that became visible after the trade was booked (income history lags)."""
        self._write("UPDATE trades SET funding = ?, net_pnl = ? WHERE id = ?", (funding, net_pnl, trade_id))

    def amend_trade_fees(self, trade_id: int, entry_fee: float, net_pnl: float) -> None:
        """An entry fee that could be read only after the trade was booked."""
        self._write(
            "UPDATE trades SET entry_fee = ?, net_pnl = ? WHERE id = ?", (entry_fee, net_pnl, trade_id)
        )

    def record_accounted(self, symbol: str, keys: list[str], time_ms: int) -> None:
        """Executions / income rows counted in a trade (see the ``accounted`` table)."""
        self._write(
            "INSERT OR IGNORE INTO accounted (symbol, key, time_ms) VALUES (?, ?, ?)",
            [(symbol, k, time_ms) for k in keys],
            many=True,
        )

    def set_kill_switch(
        self, symbol: str, *, tripped: bool, reason: str, time_ms: int, since_trade_id: int
    ) -> int:
        """Upsert the symbol's kill-switch row; returns the write's number (``written``)."""
        return self._write(
            "INSERT INTO kill_switch (symbol, tripped, reason, time_ms, since_trade_id)"
            " VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(symbol) DO UPDATE SET tripped = excluded.tripped, reason = excluded.reason,"
            " time_ms = excluded.time_ms, since_trade_id = excluded.since_trade_id",
            (symbol, int(tripped), reason, time_ms, since_trade_id),
        )

    # ================================================================ readers
