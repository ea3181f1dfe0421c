"""The journal's reads: trades, orders, fills, events, the kill switch's row and the day's PnL.

Why apart from ``journal``: that module owns the connection, the write path (writer thread,
groups, write-ahead) and the schema's upkeep; these are the queries the bots, the risk manager,
recovery and the operator commands ask of it. Every read goes through ``_q``, which first waits
(bounded) for the writes queued before it, so a bot reads its own writes.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime
from typing import Any

from perpbot.domain.types import ClosedTrade
from perpbot.engine.journal_records import JournalEvent, KillSwitchState, OrderRecord, trade_from_row
from perpbot.engine.journal_schema import ORDER_COLS, TRADE_COLS


def _where(*tests: tuple[str, Any] | None) -> tuple[str, list[Any]]:
    """`` WHERE a AND b`` and its arguments from the optional ``(clause, value)`` filters given
    (an empty string when none is): the readers' optional filters stay parameterised SQL."""
    given = [t for t in tests if t is not None]
    if not given:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in given), [v for _, v in given]


def _symbol_test(symbol: str | None) -> tuple[str, str] | None:
    return None if symbol is None else ("symbol = ?", symbol)


def _day_bounds(day: date) -> tuple[int, int]:
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    return start, start + 86_400_000


_FillRows = list[tuple[int, int, float, float, float]]  # (time, trade id, qty, price, commission)


class JournalReads:
    """The read queries of ``Journal`` (mixed in)."""

    def _q(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        raise NotImplementedError  # ``Journal._q``: a read after the writes queued before it

    def closed_trades(self, symbol: str | None = None) -> list[ClosedTrade]:
        """Every closed trade in journal order (optionally of one symbol)."""
        where, args = _where(_symbol_test(symbol))
        rows = self._q(f"SELECT {TRADE_COLS} FROM trades{where} ORDER BY id", args).fetchall()
        return [trade_from_row(r) for r in rows]

    def recent_pnls(self, symbol: str, n: int, *, after_id: int = 0) -> list[tuple[int, float]]:
        """(journal id, net PnL) of ``symbol``'s last ``n`` trades with id > ``after_id``, oldest
        first, amendments included (the kill switch's window)."""
        rows = self._q(
            "SELECT id, net_pnl FROM trades WHERE symbol = ? AND id > ? ORDER BY id DESC LIMIT ?",
            (symbol, after_id, n),
        ).fetchall()
        return [(int(i), float(p)) for i, p in reversed(rows)]

    def booked_since(self, symbol: str, exit_from_ms: int) -> list[tuple[int, int, ClosedTrade]]:
        """(journal id, entry order id, trade) of ``symbol``'s trades that closed at or after
        ``exit_from_ms``, oldest first: what a restarted bot watches again (``catchup``)."""
        rows = self._q(
            f"SELECT {TRADE_COLS}, entry_order_id FROM trades WHERE symbol = ? AND exit_time_ms >= ?"
            " ORDER BY id",
            (symbol, exit_from_ms),
        ).fetchall()
        return [(int(r[0]), int(r[-1]), trade_from_row(r)) for r in rows]

    def trade_of_entry(self, symbol: str, entry_order_id: int) -> bool:
        """Whether a trade of ``symbol`` booked the entry order ``entry_order_id``."""
        row = self._q(
            "SELECT 1 FROM trades WHERE symbol = ? AND entry_order_id = ? LIMIT 1", (symbol, entry_order_id)
        ).fetchone()
        return row is not None

    def last_trade_exit(self, symbol: str) -> tuple[int, int] | None:
        """(exit time, entry order id) of ``symbol``'s last booked trade; the entry order id is 0
        when the trade names none (an adopted position whose entry was unknown, a journal written
        before the column). None without a trade."""
        row = self._q(
            "SELECT exit_time_ms, entry_order_id FROM trades WHERE symbol = ? ORDER BY id DESC LIMIT 1",
            (symbol,),
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1] or 0))

    def last_trade_id(self, symbol: str | None = None) -> int:
        where, args = _where(_symbol_test(symbol))
        return int(self._q(f"SELECT MAX(id) FROM trades{where}", args).fetchone()[0] or 0)

    def daily_pnl(self, day: date) -> float:
        """Σ net PnL of the trades that closed on ``day`` (UTC): the risk manager's restore value."""
        start, end = _day_bounds(day)
        row = self._q(
            "SELECT COALESCE(SUM(net_pnl), 0.0) FROM trades WHERE exit_time_ms >= ? AND exit_time_ms < ?",
            (start, end),
        ).fetchone()
        return float(row[0])

    def kill_switch_state(self, symbol: str, *, wait: bool = True) -> KillSwitchState | None:
        """The symbol's kill-switch row. ``wait=False``: what the file holds now, without waiting
        for queued writes (the caller knows its own write is in, ``written``)."""
        sql = "SELECT symbol, tripped, reason, time_ms, since_trade_id FROM kill_switch WHERE symbol = ?"
        row = (self._q(sql, (symbol,)) if wait else self._db.execute(sql, (symbol,))).fetchone()
        if row is None:
            return None
        return KillSwitchState(row[0], bool(row[1]), row[2], row[3], row[4])

    def events(self, kind: str | None = None, symbol: str | None = None) -> list[JournalEvent]:
        """Events in order; ``kind`` matches exactly or as a prefix ending in '.' ("risk.")."""
        kind_test = None
        if kind is not None:
            kind_test = ("kind LIKE ?", kind + "%") if kind.endswith(".") else ("kind = ?", kind)
        where, args = _where(kind_test, _symbol_test(symbol))
        rows = self._q(
            f"SELECT id, time_ms, kind, symbol, message, data FROM events{where} ORDER BY id", args
        ).fetchall()
        return [
            JournalEvent(r[0], r[1], r[2], r[3], r[4], None if r[5] is None else json.loads(r[5]))
            for r in rows
        ]

    @staticmethod
    def _order(row: tuple[Any, ...]) -> OrderRecord:
        return OrderRecord(*row)

    def orders(self, symbol: str | None = None, kind: str | None = None) -> list[OrderRecord]:
        where, args = _where(_symbol_test(symbol), None if kind is None else ("kind = ?", kind))
        rows = self._q(f"SELECT {ORDER_COLS} FROM orders{where} ORDER BY id", args).fetchall()
        return [self._order(r) for r in rows]

    def last_order(self, symbol: str, kinds: tuple[str, ...]) -> OrderRecord | None:
        """The most recent order of one of ``kinds`` for ``symbol`` (recovery reads the entry)."""
        marks = ", ".join("?" for _ in kinds)
        row = self._q(
            f"SELECT {ORDER_COLS} FROM orders WHERE symbol = ? AND kind IN ({marks})"
            " ORDER BY id DESC LIMIT 1",
            (symbol, *kinds),
        ).fetchone()
        return None if row is None else self._order(row)

    def accounted_keys(self, symbol: str) -> list[str]:
        """Every accounting key recorded for ``symbol`` (restored by the bot at construction)."""
        rows = self._q("SELECT key FROM accounted WHERE symbol = ?", (symbol,)).fetchall()
        return [r[0] for r in rows]

    def fills_of_client_id(self, symbol: str, client_id: str) -> _FillRows:
        """(time, trade id, qty, price, commission) of the journaled executions of one client
        order id, oldest first: recovery rebuilds an entry from them (defect 15)."""
        return self._fills_by("client_id", symbol, client_id)

    def _fills_by(self, column: str, symbol: str, key: str | int) -> _FillRows:
        rows = self._q(
            f"SELECT time_ms, trade_id, qty, price, commission FROM fills WHERE symbol = ? AND {column} = ?"
            " ORDER BY id",
            (symbol, key),
        ).fetchall()
        return [(int(r[0]), int(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in rows]

    def fills_of_order(self, symbol: str, order_id: int) -> _FillRows:
        """``fills_of_client_id`` by exchange order id: executions stored from ``userTrades``
        carry no client id."""
        return self._fills_by("order_id", symbol, order_id)

    def fill_count(self, symbol: str | None = None) -> int:
        where, args = _where(_symbol_test(symbol))
        return int(self._q(f"SELECT COUNT(*) FROM fills{where}", args).fetchone()[0])
