"""What the per-symbol kill switch does in a backtest: ``--kill-switch on|off|reset-after=DAYS``.

Why a choice at all: the kill switch latches (SPEC §13 row 27): in live trading it stays tripped
until an operator resets it. A year-long backtest therefore usually stops trading a symbol after
its first bad streak, which is what live would do but tells little about the rest of the year.

- ``on`` (default, as live): the very ``KillSwitch`` of the bots; it latches for the rest of the run.
- ``off``: the switch never trips (every signal is considered); the run says so.
- ``reset-after=DAYS``: a trip is reset automatically ``DAYS`` days later, as if an operator
  had set ``RESET_KILL_SWITCH_<SYMBOL>`` and restarted: the baseline moves past the existing
  trades (the trades that tripped it cannot trip it again) and the reset is journaled.

The switch itself is the engine's ``KillSwitch``; ``BacktestKillSwitch`` only adds the off and
timed-reset behaviours, so ``on`` is bit-for-bit the live rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from perpbot.engine.clock import Clock
from perpbot.engine.journal import Journal
from perpbot.engine.kill_switch import KillSwitch
from perpbot.errors import ConfigError

DAY_MS = 86_400_000
Mode = Literal["on", "off", "reset"]


@dataclass(frozen=True, slots=True)
class KillSwitchPolicy:
    mode: Mode = "on"
    reset_after_days: float | None = None

    @classmethod
    def parse(cls, raw: str, flag: str = "--kill-switch") -> KillSwitchPolicy:
        """``on``, ``off`` or ``reset-after=DAYS`` (DAYS > 0, fractions allowed)."""
        text = raw.strip().lower()
        if text in ("on", "off"):
            return cls(mode="on" if text == "on" else "off")
        if text.startswith("reset-after="):
            value = text.split("=", 1)[1]
            try:
                days = float(value)
            except ValueError:
                days = math.nan
            if not (math.isfinite(days) and days > 0):
                raise ConfigError(f"{flag}={raw!r}: DAYS must be a number > 0 (e.g. reset-after=7)")
            return cls(mode="reset", reset_after_days=days)
        raise ConfigError(f"{flag}={raw!r}: expected on, off or reset-after=DAYS")

    def describe(self) -> str:
        if self.mode == "reset":
            return f"reset-after={self.reset_after_days:g}"
        return self.mode

    def make(self, symbol: str, journal: Journal, clock: Clock) -> KillSwitch | None:
        """The switch a bot gets; None for ``on`` (the bot builds its own, the live one)."""
        if self.mode == "on":
            return None
        return BacktestKillSwitch(symbol, journal, clock, self)


KILL_SWITCH_ON = KillSwitchPolicy()


class BacktestKillSwitch(KillSwitch):
    """The live ``KillSwitch`` with the backtest-only ``off`` and timed-reset behaviours."""

    def __init__(self, symbol: str, journal: Journal, clock: Clock, policy: KillSwitchPolicy) -> None:
        self._clock = clock
        self._policy = policy
        self._tripped = False
        self._trip_ms = 0
        super().__init__(symbol, journal)

    @property  # type: ignore[override]
    def tripped(self) -> bool:
        """Read by the bot before every entry; a due timed reset happens on that read."""
        if self._tripped and self._policy.mode == "reset":
            now = self._clock.now_ms()
            days = self._policy.reset_after_days or 0.0
            if now >= self._trip_ms + days * DAY_MS:
                self._auto_reset(now)
        return self._tripped

    @tripped.setter
    def tripped(self, value: bool) -> None:
        if value and not self._tripped:
            self._trip_ms = self._clock.now_ms()
        self._tripped = value

    def _check(self, now_ms: int) -> str | None:
        if self._policy.mode == "off":
            return None
        return super()._check(now_ms)

    def _auto_reset(self, now_ms: int) -> None:
        journal = self._journal
        self._since_trade_id = journal.last_trade_id(self.symbol)
        self._tripped, self.reason = False, ""
        self._pnls.clear()
        journal.set_kill_switch(
            self.symbol, tripped=False, reason="", time_ms=now_ms, since_trade_id=self._since_trade_id
        )
        journal.record_event(
            now_ms,
            "kill_switch.reset",
            self.symbol,
            f"automatic reset {self._policy.reset_after_days:g} day(s) after the trip "
            f"(backtest --kill-switch {self._policy.describe()})",
            {"since_trade_id": self._since_trade_id},
        )
