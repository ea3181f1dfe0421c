"""The journal side of the operator commands (``perpbot status``, ``perpbot kill-switch reset``).

Why a separate, read-only reader for ``status``: a running ``perpbot run`` owns the journal (its
lock, its writer thread, the row ids it allocates in memory). ``status`` must be usable at any
time without disturbing it, so it opens the file with SQLite's ``mode=ro`` URI: it cannot write,
cannot create the file and never takes a write lock. WAL mode lets it read while the bot writes.

What "the journal's view of a position" means: the journal has no positions table (the exchange
is the source of truth). The journal *believes* a symbol is open when its latest entry that filled
(an ``ENTRY`` order with executions, or a ``position_adopted`` event) has no closed trade after it.
``status`` compares that belief with the exchange and flags any disagreement.

Why ``kill-switch reset`` may write while a bot runs: it touches only the ``kill_switch`` row of
one symbol and appends an ``events`` row (SQLite allocates that id), never the order or trade ids
the running process allocates itself. The running runtime sees the cleared row at its next candle
of that symbol (``KillSwitch.take_operator_reset``); the next run sees it at boot.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from perpbot.config import MAX_DAILY_LOSS
from perpbot.errors import ConfigError, DataError
from perpbot.runtime.guard import JOURNAL_FORMAT

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class JournalPosition:
    """What the journal believes is open for one symbol."""

    side: str  # LONG / SHORT
    qty: float
    entry_price: float
    since_ms: int
    source: str  # "entry" (a filled ENTRY order) or "adopted" (a position_adopted event)


@dataclass(frozen=True, slots=True)
class KillSwitchView:
    tripped: bool
    reason: str
    time_ms: int


@dataclass(frozen=True, slots=True)
class DailyLoss:
    """Today's realised PnL against the 5 % daily-loss limit of the base balance."""

    day: str
    pnl: float
    base_balance: float | None  # the last base balance a run set (None: no run yet)
    limit: float | None  # the loss (positive USDT) at which entries stop
    blocked: bool


def _require_journal(path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"{path}: no journal (give --journal, or run perpbot run first)")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file (--journal)")


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing journal of a format this perpbot reads."""
    _require_journal(path)
    try:
        con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5.0)
        version = int(con.execute("PRAGMA user_version").fetchone()[0])
        con.execute("SELECT 1 FROM trades LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not a perpbot journal ({exc})") from None
    if version > JOURNAL_FORMAT:
        con.close()
        raise ConfigError(
            f"{path}: journal format {version} written by a newer perpbot (this one reads "
            f"<= {JOURNAL_FORMAT}); upgrade perpbot"
        )
    return con


def day_of(now_ms: int) -> date:
    return datetime.fromtimestamp(now_ms // 1000, tz=UTC).date()


class JournalReader:
    """Read-only queries for ``status`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._con = open_read_only(path)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def position(self, symbol: str) -> JournalPosition | None:
        """The journal's belief (see the module docstring), or None when it believes flat."""
        q = self._con.execute
        entry = q(
            "SELECT o.time_ms, o.side, COALESCE(NULLIF(o.executed_qty, 0), SUM(f.qty), 0),"
            " COALESCE(NULLIF(o.avg_price, 0), SUM(f.qty * f.price) / NULLIF(SUM(f.qty), 0), 0)"
            " FROM orders o LEFT JOIN fills f ON f.symbol = o.symbol AND o.client_id != ''"
            " AND f.client_id = o.client_id"
            " WHERE o.symbol = ? AND o.kind = 'ENTRY' GROUP BY o.id"
            " HAVING COALESCE(NULLIF(o.executed_qty, 0), SUM(f.qty), 0) > 0"
            " ORDER BY o.id DESC LIMIT 1",
            (symbol,),
        ).fetchone()
        adopted = q(
            "SELECT time_ms, message FROM events WHERE symbol = ? AND kind = 'position_adopted'"
            " ORDER BY id DESC LIMIT 1",
            (symbol,),
        ).fetchone()
        best: JournalPosition | None = None
        if entry is not None:
            side = "LONG" if entry[1] == "BUY" else "SHORT"
            # The trade of this entry starts at its first execution, never before the request.
            closed = q(
                "SELECT 1 FROM trades WHERE symbol = ? AND entry_time_ms >= ? LIMIT 1", (symbol, entry[0])
            ).fetchone()
            if closed is None:
                best = JournalPosition(side, float(entry[2]), float(entry[3]), int(entry[0]), "entry")
        if adopted is not None and (best is None or adopted[0] > best.since_ms):
            closed = q(
                "SELECT 1 FROM trades WHERE symbol = ? AND exit_time_ms >= ? LIMIT 1", (symbol, adopted[0])
            ).fetchone()
            if closed is None:
                best = _adopted(adopted[1], int(adopted[0])) or best
        return best

    def kill_switch(self, symbol: str) -> KillSwitchView:
        row = self._con.execute(
            "SELECT tripped, reason, time_ms FROM kill_switch WHERE symbol = ?", (symbol,)
        ).fetchone()
        if row is None:
            return KillSwitchView(False, "", 0)
        return KillSwitchView(bool(row[0]), str(row[1]), int(row[2]))

    def daily_loss(self, now_ms: int) -> DailyLoss:
        """Today's (UTC) realised net PnL, as the risk manager restores it, and its limit state."""
        start = now_ms - now_ms % DAY_MS
        pnl = float(
            self._con.execute(
                "SELECT COALESCE(SUM(net_pnl), 0.0) FROM trades WHERE exit_time_ms >= ? AND exit_time_ms < ?",
                (start, start + DAY_MS),
            ).fetchone()[0]
        )
        row = self._con.execute(
            "SELECT data FROM events WHERE kind = 'risk.base_balance_set' ORDER BY id DESC LIMIT 1"
        ).fetchone()
        base = None
        if row is not None and row[0]:
            base = float(json.loads(row[0]).get("base_balance", 0.0)) or None
        limit = None if base is None else base * MAX_DAILY_LOSS
        blocked = limit is not None and pnl < 0 and -pnl >= limit
        return DailyLoss(day_of(now_ms).isoformat(), pnl, base, limit, blocked)

    def symbols(self) -> list[str]:
        """Every symbol the journal has seen (so ``status`` can show one no longer configured)."""
        rows = self._con.execute(
            "SELECT symbol FROM orders UNION SELECT symbol FROM trades UNION SELECT symbol FROM kill_switch"
        ).fetchall()
        return sorted(r[0] for r in rows if r[0])


def _adopted(message: str, time_ms: int) -> JournalPosition | None:
    """``adopted LONG qty 12.0 entry 0.61`` (the bot's ``position_adopted`` message)."""
    parts = message.split()
    try:
        return JournalPosition(parts[1], float(parts[3]), float(parts[5]), time_ms, "adopted")
    except (IndexError, ValueError):
        return None


def reset_kill_switch(path: Path, symbol: str, now_ms: int) -> str:
    """Clear ``symbol``'s kill switch in the journal with an audit event; the line to print.

    The reset moves the symbol's baseline past its existing trades (as ``RESET_KILL_SWITCH_<S>``
    does at boot), otherwise the very trades that tripped it would trip it again.
    """
    from perpbot.engine.journal import Journal

    with JournalReader(path) as r:
        state = r.kill_switch(symbol)
    if not state.tripped:
        return f"{symbol}: kill switch is not tripped; nothing to reset"
    # background=False: each statement commits before we return (SQLite waits on a busy writer).
    with Journal(path, background=False) as j:
        since = j.last_trade_id(symbol)
        j.set_kill_switch(symbol, tripped=False, reason="", time_ms=now_ms, since_trade_id=since)
        msg = f"kill switch reset by the operator (perpbot kill-switch reset); was tripped: {state.reason}"
        j.record_event(
            now_ms,
            "kill_switch.reset",
            symbol,
            msg,
            {"since_trade_id": since, "by": "operator", "was": state.reason},
        )
    return f"{symbol}: kill switch reset (was: {state.reason}); trades up to #{since} no longer count"


def lock_holder(journal: Path) -> str | None:
    """Who holds ``journal``'s run lock (``pid N``), or None when nobody does.

    A shared, non-blocking probe released at once: it never writes the lock file. (A ``perpbot
    run`` starting in the same microsecond would be refused and can simply be started again.)
    """
    import fcntl

    lock = Path(str(journal) + ".lock")
    try:
        fh = open(lock)  # noqa: SIM115 - closed below
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "another process"
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return None
    finally:
        fh.close()
