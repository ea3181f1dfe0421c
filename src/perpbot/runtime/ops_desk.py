"""Operator requests to a *running* runtime through its journal: ``perpbot flatten`` while a run
owns the journal.

Why through the journal: the running process is the only one that may book a trade on this
journal (it allocates the row ids, and it would see the close's fills on its user stream anyway),
so the command does not close anything itself. It appends an ``operator.flatten_request`` event
(SQLite allocates event ids, so another process may append one safely) and waits for the run's
``operator.flatten_done`` answer. The run polls for requests every ``operator_s`` seconds
(``OperatorDesk.poll``: one indexed read of a read-only connection) and runs each one as a job on
the symbol's worker, so it never races that bot's candle handling: the bot's own confirmed close
(``close_position(MANUAL)``) books the trade once, then both books of the flat symbol are
cancelled. A request carries a wall-clock expiry: one found later (the run was down or busy)
is answered ``expired`` and not acted upon, so an old request can never close a newer position.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perpbot.domain.types import CloseReason
from perpbot.runtime.ops_journal import open_read_only

log = logging.getLogger(__name__)

REQUEST = "operator.flatten_request"
DONE = "operator.flatten_done"
ANSWER_GRACE_S = 15.0  # beyond the request's lifetime, for the run to write its answer (a busy host)


@dataclass(frozen=True, slots=True)
class DeskAnswer:
    symbol: str
    status: str  # flat / still_open / expired / unknown_symbol
    message: str


def _wall_ms() -> int:
    return int(time.time() * 1000)


class OperatorDesk:
    """The running runtime's side (see the module docstring)."""

    def __init__(self, runtime: Any, journal_path: Path) -> None:
        self._rt = runtime
        self._path = journal_path
        self._con: sqlite3.Connection | None = None
        self._last_id = 0  # requests up to this id were seen
        self._started_ms = _wall_ms()
        self.handled = 0

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._con is None:
            self._con = open_read_only(self._path)
        return self._con.execute(sql, args).fetchall()

    async def poll(self) -> None:
        """Take the requests appended since the last poll. The first poll reads them all, so a
        request written while this run was starting is not missed; one that expired before this
        run started was already reported as unanswered by its command and is passed over."""
        rows = self._read(
            "SELECT id, symbol, data FROM events WHERE kind = ? AND id > ? ORDER BY id",
            (REQUEST, self._last_id),
        )
        for rid, symbol, data in rows:
            self._last_id = int(rid)
            req = json.loads(data or "{}")
            request = str(req.get("request", ""))
            expires = int(req.get("expires_ms", 0))
            if expires < _wall_ms():
                if expires >= self._started_ms:
                    self._answer(symbol, request, "expired", "expired before the run saw it; nothing sent")
                continue
            if self._answered(request):  # by an earlier run of this journal: never twice
                continue
            worker = self._rt.workers.get(symbol)
            if worker is None or symbol not in self._rt.bots:
                self._answer(symbol, request, "unknown_symbol", f"{symbol} is not traded by this run")
                continue
            worker.submit(lambda s=symbol, r=request: self._flatten(s, r))

    def _answered(self, request: str) -> bool:
        rows = self._read(
            "SELECT 1 FROM events WHERE kind = ? AND json_extract(data, '$.request') = ? LIMIT 1",
            (DONE, request),
        )
        return bool(rows)

    async def _flatten(self, symbol: str, request: str) -> None:
        from perpbot.runtime.ops_flatten import booked_line, cancel_both_books

        rt = self._rt
        bot = rt.bots[symbol]
        booked = len(bot.closed_trades)
        had = await rt.exchange.position(symbol) is not None
        if had or bot.in_position:
            await bot.close_position(CloseReason.MANUAL)
        still_open = await rt.exchange.position(symbol) is not None
        cancelled = 0 if still_open else await cancel_both_books(rt.exchange, symbol)
        trades = bot.closed_trades[booked:]
        parts = [booked_line(t) for t in trades]
        if still_open:
            msg = "close NOT confirmed; the position keeps its protective orders (check perpbot status)"
        else:
            head = "closed by the running bot" if had else "already flat"
            msg = "; ".join([head, *parts, f"{cancelled} resting order(s) cancelled"])
        self.handled += 1
        self._answer(symbol, request, "still_open" if still_open else "flat", msg)
        await rt.alert("info", f"[{symbol}] operator flatten: {msg}")

    def _answer(self, symbol: str, request: str, status: str, message: str) -> None:
        log.warning("%s: operator flatten %s: %s", symbol, status, message)
        self._rt.journal.record_event(
            self._rt.clock.now_ms(), DONE, symbol, message, {"request": request, "status": status}
        )

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


async def request_flatten(journal: Path, symbols: list[str], timeout_s: float) -> list[DeskAnswer]:
    """The command's side: append one request per symbol, wait (bounded) for every answer."""
    from perpbot.engine.journal import Journal

    stamp = f"{os.getpid()}-{time.time_ns()}"
    expires = _wall_ms() + int(timeout_s * 1000)
    wanted = {f"{stamp}-{s}": s for s in symbols}
    with Journal(journal, background=False) as j:
        for rid, sym in wanted.items():
            j.record_event(
                _wall_ms(),
                REQUEST,
                sym,
                "perpbot flatten (to the running bot)",
                {
                    "request": rid,
                    "expires_ms": expires,
                },
            )
    answers: dict[str, DeskAnswer] = {}
    con = open_read_only(journal)
    try:
        deadline = time.monotonic() + timeout_s + ANSWER_GRACE_S  # an expired request is answered too
        while len(answers) < len(wanted) and time.monotonic() < deadline:
            for symbol, message, data in con.execute(
                "SELECT symbol, message, data FROM events WHERE kind = ? ORDER BY id DESC LIMIT 200", (DONE,)
            ).fetchall():
                d = json.loads(data or "{}")
                if d.get("request") in wanted:
                    answers[d["request"]] = DeskAnswer(symbol, str(d.get("status")), message)
            await asyncio.sleep(0.2)
    finally:
        con.close()
    late = f"the running bot did not answer within {timeout_s:g} s (check perpbot status)"
    return [answers.get(rid, DeskAnswer(sym, "no_answer", late)) for rid, sym in wanted.items()]
