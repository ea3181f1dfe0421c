"""Per-symbol kill switch (SPEC §13 row 27): a circuit breaker on a symbol's own closed trades.

* fast trip: the last 8 closed trades are all net-negative;
* slow trip: the profit factor of the last 15 closed trades is below 0.75 (only when their gross
  loss is > 0; a full window of 15 is required so that two early losers cannot trip it).

Why it blocks entries and re-entries only: an open position keeps its exchange-side SL/TP, and
closing it on a trip would realise a loss the strategy did not ask for. Why it latches: once
tripped it stays tripped across restarts (state persisted in the journal) until an operator sets
``RESET_KILL_SWITCH_<SYMBOL>=true`` and restarts; the reset also moves a baseline past the
existing trades, otherwise the very trades that tripped it would trip it again at boot.
The design point kept JSON lines per symbol; here the journal's ``trades`` table is that history.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

from perpbot.domain.types import ClosedTrade
from perpbot.engine.journal import Journal

log = logging.getLogger(__name__)

FAST_WINDOW = 8
SLOW_WINDOW = 15
SLOW_MIN_PF = 0.75


def evaluate(
    pnls: Sequence[float],
    *,
    fast_window: int = FAST_WINDOW,
    slow_window: int = SLOW_WINDOW,
    slow_min_pf: float = SLOW_MIN_PF,
) -> str | None:
    """The trip rule on a symbol's net PnLs (oldest first); returns a reason or None."""
    if len(pnls) >= fast_window and all(p < 0 for p in pnls[-fast_window:]):
        return f"fast: last {fast_window} trades all net-negative"
    if len(pnls) >= slow_window:
        window = pnls[-slow_window:]
        gross_loss = -sum(p for p in window if p < 0)
        if gross_loss > 0:
            pf = sum(p for p in window if p > 0) / gross_loss
            if pf < slow_min_pf:
                return f"slow: profit factor {pf:.2f} of last {slow_window} trades < {slow_min_pf}"
    return None


class KillSwitch:
    """State of one symbol's kill switch; journal-backed, rebuilt by ``boot``."""

    def __init__(
        self,
        symbol: str,
        journal: Journal,
        *,
        fast_window: int = FAST_WINDOW,
        slow_window: int = SLOW_WINDOW,
        slow_min_pf: float = SLOW_MIN_PF,
    ) -> None:
        self.symbol = symbol
        self._journal = journal
        self._fast = fast_window
        self._slow = slow_window
        self._pf = slow_min_pf
        # (journal trade id, net PnL), oldest first: a trade amended later (late funding, a late
        # entry fee) is found by its id (``amend``).
        self._pnls: deque[tuple[int, float]] = deque(maxlen=max(fast_window, slow_window))
        self.tripped = False
        self.reason = ""
        self._since_trade_id = 0
        self._trip_write = 0  # journal write number of this process's own trip (``written``)

    def boot(self, now_ms: int, *, reset: bool = False) -> str | None:
        """Rebuild from the journal at start-up; ``reset`` is ``RESET_KILL_SWITCH_<SYMBOL>``.

        Returns the trip reason when the switch is (still or newly) tripped after boot.
        """
        state = self._journal.kill_switch_state(self.symbol)
        self._since_trade_id = state.since_trade_id if state else 0
        if reset:
            was = bool(state and state.tripped)
            self._since_trade_id = self._journal.last_trade_id(self.symbol)
            self.tripped, self.reason = False, ""
            self._journal.set_kill_switch(
                self.symbol, tripped=False, reason="", time_ms=now_ms, since_trade_id=self._since_trade_id
            )
            msg = (
                f"kill switch reset by RESET_KILL_SWITCH_{self.symbol} (was {'tripped' if was else 'clear'})"
            )
            log.warning("%s: %s", self.symbol, msg)
            self._journal.record_event(
                now_ms, "kill_switch.reset", self.symbol, msg, {"since_trade_id": self._since_trade_id}
            )
        elif state is not None and state.tripped:
            self.tripped, self.reason = True, state.reason
        self._pnls.clear()
        self._pnls.extend(
            self._journal.recent_pnls(self.symbol, self._pnls.maxlen or 0, after_id=self._since_trade_id)
        )
        if not self.tripped:
            self._check(now_ms)
        return self.reason if self.tripped else None

    def take_operator_reset(self, now_ms: int) -> bool:
        """A running bot's check for ``perpbot kill-switch reset`` (another process clearing the
        journal row): when tripped here but clear in the journal, rebuild from the journal (the
        reset's baseline included) and return True.

        A clear row is the operator's only once this process's own trip is in the file. Why not
        wait for it, as other reads do (``Journal._q`` flushes every queued write): this runs on
        every candle of a tripped symbol, on the event loop, next to the other symbols' decisions;
        waiting for the writer thread to drain what all bots queued took up to ~6 ms there
        (issue 10, measured). So while the trip is still queued the check is left to a later
        candle, and once it is written the row is read as the file holds it, without waiting."""
        if not self.tripped or not self._journal.written(self._trip_write):
            return False
        state = self._journal.kill_switch_state(self.symbol, wait=False)
        if state is None or state.tripped:
            return False
        self.tripped, self.reason = False, ""
        self.boot(now_ms)
        log.warning("%s: operator's kill-switch reset taken (tripped again: %s)", self.symbol, self.tripped)
        return True

    def record(self, trade: ClosedTrade, now_ms: int, trade_id: int = 0) -> str | None:
        """Account one closed trade (already journaled as ``trade_id``); returns the reason if
        this trade trips it."""
        self._pnls.append((trade_id, trade.net_pnl))
        if self.tripped:
            return None
        return self._check(now_ms)

    def amend(self, trade_id: int, net_pnl: float, now_ms: int) -> str | None:
        """A booked trade's net PnL corrected (late funding, a late entry fee): the window
        judges it as amended, as a restart would from the journal; returns the reason if the
        corrected figure trips it. A trade no longer in the window changes nothing."""
        for k, (tid, _old) in enumerate(self._pnls):
            if tid == trade_id and trade_id:
                self._pnls[k] = (tid, net_pnl)
                return None if self.tripped else self._check(now_ms)
        return None

    def _check(self, now_ms: int) -> str | None:
        pnls = [p for _tid, p in self._pnls]
        reason = evaluate(pnls, fast_window=self._fast, slow_window=self._slow, slow_min_pf=self._pf)
        if reason is None:
            return None
        self.tripped, self.reason = True, reason
        self._trip_write = self._journal.set_kill_switch(
            self.symbol, tripped=True, reason=reason, time_ms=now_ms, since_trade_id=self._since_trade_id
        )
        self._journal.record_event(now_ms, "kill_switch.trip", self.symbol, reason, {"pnls": pnls})
        log.warning("%s: kill switch tripped (%s)", self.symbol, reason)
        return reason
