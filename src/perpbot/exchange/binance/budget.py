"""One request-weight budget per process, shared by every bot and every adapter instance.

Why process-wide: Binance limits request weight per IP (2400 per calendar minute on USDT-M), so
three bots that each keep "their own" limiter can together exceed it and get the IP banned for
everyone. ccxt's limiter is per instance (the reference, §4), so the adapter replaces it with
this one.

How it works:
- Fixed calendar-minute windows like Binance's counter; ``acquire(cost)`` waits for the next
  minute when the spend would cross ``limit * margin``.
- Order placement and cancellation (``acquire(cost, order=True)``) may also spend the margin, up to
  ``limit``: reads (a klines preload, a trade/income catch-up) must not hold a stop-loss or an
  emergency close back until the next minute. Binance counts new orders on their own per-account
  order-count limit (weight 0 on the IP, 1 for a cancel), so the margin is theirs to use.
- ``observe_used(n)`` corrects the local count from ``X-MBX-USED-WEIGHT-1M`` (other processes on
  the same IP, requests ccxt costed differently): the count never goes below what Binance says.
- ``on_429(retry_after_s)``: every request of the process waits until the window Binance named
  is over; the ``alert`` callback is called once per such window. The refused request itself is
  *not* retried here (the caller decides; an order may not be resent blindly).
- ``on_418(retry_after_s)``: the IP is banned. Nothing is sent until the ban is over; requests
  fail at once with ``BannedError`` and the ``alert`` callback is called once per ban.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

BINANCE_WEIGHT_PER_MINUTE = 2400
DEFAULT_MARGIN = 0.8  # leave 20 % for other clients on the IP and cost estimates that are off
MAX_WAIT_S = 65.0  # longer than this (a long 429 window) and the caller gets an error instead


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class BannedError(Exception):
    """The IP is banned (HTTP 418) or told to back off for longer than a caller may wait."""

    def __init__(self, until_ms: int, reason: str) -> None:
        super().__init__(f"{reason}: no request is sent before {until_ms} (epoch ms)")
        self.until_ms = until_ms


class WeightBudget:
    """Process-wide weight accounting; every adapter calls ``acquire`` before each request."""

    def __init__(
        self,
        limit: int = BINANCE_WEIGHT_PER_MINUTE,
        margin: float = DEFAULT_MARGIN,
        *,
        now_ms: Callable[[], int] = wall_ms,
        alert: Callable[[str], None] | None = None,
    ) -> None:
        self.limit = int(limit)
        self.capacity = int(limit * margin)  # what reads may spend; orders may go up to ``limit``
        self.now_ms = now_ms
        self.alert = alert
        self._window = -1
        self._used = 0
        self._blocked_until = 0  # 429: wait until then
        self._banned_until = 0  # 418: refuse until then
        self.waits = 0  # how often a request had to wait (diagnostics, tests)

    # ------------------------------------------------------------------ accounting

    def _roll(self, now: int) -> None:
        window = now // 60_000
        if window != self._window:
            self._window, self._used = window, 0

    @property
    def used(self) -> int:
        self._roll(self.now_ms())
        return self._used

    def observe_used(self, used: int) -> None:
        """Binance's own count for this minute (``X-MBX-USED-WEIGHT-1M``) corrects ours upwards."""
        self._roll(self.now_ms())
        if used > self._used:
            self._used = used

    def on_429(self, retry_after_s: float) -> None:
        """Honour ``Retry-After`` for the whole process; alert once per back-off window (a burst
        of 429s inside one window is one event for the operator)."""
        now = self.now_ms()
        until = now + int(max(retry_after_s, 1.0) * 1000)
        if until > self._blocked_until:
            fresh = now >= self._blocked_until
            self._blocked_until = until
            log.warning("binance: HTTP 429, every request of this process waits %.0f s", retry_after_s)
            if fresh and self.alert is not None:
                self.alert(
                    f"Binance answered HTTP 429 (too many requests, -1003); every request of this "
                    f"process waits {retry_after_s:.0f} s"
                )

    def on_418(self, retry_after_s: float) -> None:
        """IP banned: stop sending, alert once, refuse until the ban is over."""
        until = self.now_ms() + int(max(retry_after_s, 1.0) * 1000)
        if until > self._banned_until:
            self._banned_until = until
            msg = f"Binance banned this IP (HTTP 418) for {retry_after_s:.0f} s; no request until it lapses"
            log.error("binance: %s", msg)
            if self.alert is not None:
                self.alert(msg)

    # ------------------------------------------------------------------ admission

    async def acquire(self, cost: int, *, order: bool = False) -> None:
        """Wait until ``cost`` fits (429 window over, minute budget left); raise when banned.
        ``order``: an order placement or cancellation, admitted up to ``limit`` (not ``capacity``)."""
        cost = max(int(cost), 1)
        ceiling = max(self.limit, self.capacity) if order else self.capacity
        while True:
            now = self.now_ms()
            if now < self._banned_until:
                raise BannedError(self._banned_until, "IP banned by Binance (HTTP 418)")
            wait_ms = 0
            if now < self._blocked_until:
                wait_ms = self._blocked_until - now
            else:
                self._roll(now)
                if self._used + cost <= ceiling or self._used == 0:
                    self._used += cost
                    return
                wait_ms = (self._window + 1) * 60_000 - now
            if wait_ms > MAX_WAIT_S * 1000:
                raise BannedError(now + wait_ms, "request weight exhausted (HTTP 429 back-off)")
            self.waits += 1
            await asyncio.sleep(wait_ms / 1000.0)


_shared: WeightBudget | None = None


def shared_budget() -> WeightBudget:
    """The process's one budget (created on first use)."""
    global _shared
    if _shared is None:
        _shared = WeightBudget()
    return _shared
