"""The journal's file format: its SQLite tables, the column lists its readers select, and the
compatible additions a journal written by an older version is given when it is opened.

Separate from ``journal.py`` (which writes and reads rows) because the format is a contract of its
own: ``perpbot`` commands, the dashboard and older journals on disk all depend on it, and a change
here is a format change to review as such.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    kind TEXT NOT NULL,            -- ENTRY / SL / TP / REVERSE / EMERGENCY / CLOSE
    client_id TEXT NOT NULL DEFAULT '',
    order_id INTEGER,              -- normal order id (MARKET)
    algo_id INTEGER,               -- algo-service id (STOP_MARKET / TAKE_PROFIT_MARKET)
    order_type TEXT NOT NULL,
    side TEXT NOT NULL,
    qty REAL NOT NULL,
    trigger_price REAL,
    avg_price REAL,
    executed_qty REAL,
    status TEXT NOT NULL,          -- REQUESTED, then the exchange status or ERROR
    reason TEXT NOT NULL DEFAULT '',
    result_time_ms INTEGER
);
CREATE INDEX IF NOT EXISTS orders_symbol ON orders(symbol, id);
CREATE TABLE IF NOT EXISTS fills (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    order_id INTEGER NOT NULL,
    trade_id INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    side TEXT NOT NULL,
    order_type TEXT NOT NULL,
    original_type TEXT NOT NULL,
    execution_type TEXT NOT NULL,
    status TEXT NOT NULL,
    reduce_only INTEGER NOT NULL,
    price REAL NOT NULL,
    qty REAL NOT NULL,
    cum_qty REAL NOT NULL,
    avg_price REAL NOT NULL,
    commission REAL NOT NULL,
    realized_pnl REAL NOT NULL
);
-- A redelivered execution report (same order and trade id) is stored once.
CREATE UNIQUE INDEX IF NOT EXISTS fills_trade ON fills(symbol, order_id, trade_id);
CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    entry_time_ms INTEGER NOT NULL,
    exit_time_ms INTEGER NOT NULL,
    entry_price REAL NOT NULL,
    exit_price REAL NOT NULL,
    qty REAL NOT NULL,
    realized_pnl REAL NOT NULL,
    entry_fee REAL NOT NULL,
    exit_fee REAL NOT NULL,
    funding REAL NOT NULL,
    net_pnl REAL NOT NULL,
    reason TEXT NOT NULL,
    entry_order_id INTEGER NOT NULL DEFAULT 0  -- the entry order it booked (0: unknown/adopted)
);
CREATE INDEX IF NOT EXISTS trades_symbol ON trades(symbol, id);
CREATE INDEX IF NOT EXISTS trades_exit ON trades(exit_time_ms);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    symbol TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL,
    data TEXT                       -- JSON object or NULL
);
CREATE INDEX IF NOT EXISTS events_kind ON events(kind, id);
-- Executions ("t:<trade id>") and income rows ("i:<type>:<id>") already counted in a trade:
-- a SYNC close after a restart must not count them again (issue 7 defect 11).
CREATE TABLE IF NOT EXISTS accounted (
    symbol TEXT NOT NULL,
    key TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    PRIMARY KEY (symbol, key)
);
CREATE TABLE IF NOT EXISTS kill_switch (
    symbol TEXT PRIMARY KEY,
    tripped INTEGER NOT NULL,
    reason TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    since_trade_id INTEGER NOT NULL  -- trades with id <= this are ignored (set by a reset)
);
"""

TRADE_COLS = (
    "id, symbol, side, entry_time_ms, exit_time_ms, entry_price, exit_price, qty, "
    "realized_pnl, entry_fee, exit_fee, funding, reason"
)
ORDER_COLS = (
    "id, time_ms, symbol, kind, client_id, order_id, algo_id, order_type, side, qty, "
    "trigger_price, avg_price, executed_qty, status, reason"
)

FILL_COLS = (
    "time_ms, symbol, order_id, trade_id, client_id, side, order_type, original_type, execution_type,"
    " status, reduce_only, price, qty, cum_qty, avg_price, commission, realized_pnl"
)
_FILL_INSERT = f"INSERT INTO fills ({FILL_COLS}) VALUES ({', '.join('?' * 17)})"
# An execution is stored once (the unique index): a redelivered report adds nothing, and neither
# does a ``userTrades`` read of a reported one; a report of an execution first read from
# ``userTrades`` (status REST) replaces that row's fields with its own (client id, types, status).
REPORTED_FILL = (
    f"{_FILL_INSERT} ON CONFLICT (symbol, order_id, trade_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = excluded.{c}" for c in FILL_COLS.split(", ") if c not in ("symbol", "order_id", "trade_id")
    )
    + " WHERE fills.status = 'REST'"
)
REST_FILL = f"{_FILL_INSERT} ON CONFLICT DO NOTHING"


def add_missing_columns(db: sqlite3.Connection) -> None:
    """A journal from before a column was added gets it (with its default): additions are
    compatible both ways, so they do not change the journal format."""
    have = {r[1] for r in db.execute("PRAGMA table_info(trades)")}
    if "entry_order_id" not in have:
        db.execute("ALTER TABLE trades ADD COLUMN entry_order_id INTEGER NOT NULL DEFAULT 0")
