"""The USDT wallet balance, read over REST and reused only while provably unchanged
(docs/ARCHITECTURE.md, "Decision latency").

Why: the entry reads the balance under the global entry lock (SPEC §8.4 step 1, §13 row 16); a
REST round trip there sits between the signal and the order. The read can be taken earlier (when
a signal is known, ``prefetch``) and reused at the entry when nothing that could change the wallet
happened in between. What changes it always passes through one of these, each of which drops the
value (fail closed: the entry then reads over REST, exactly as before):
- an order of ours that can execute (``rest.executing_writes``: a cancel, a resting conditional
  order, leverage and margin-type settings change no wallet; their events would say so if they
  led to a fill);
- an ``ACCOUNT_UPDATE`` or ``ORDER_TRADE_UPDATE`` from the user stream (fills, fees, funding,
  transfers: Binance reports every wallet change there; ``invalidate``). An ``ACCOUNT_UPDATE``
  carries the new USDT wallet balance (``wb``, the field the REST read returns as ``balance``):
  that value is kept as the venue's own, as of that event (``observe``), so the entry that
  follows an exit or another symbol's entry needs no read. Only when its event time is later than
  every one kept before: a late or reordered update is never taken over a newer one;
- the user stream not connected, or reconnected since the read (events may have been missed);
- ``ttl_s`` of age (a bound, not a correctness condition).
A read during which any of these happened is returned to its caller but not kept. The semantic
is the REST value "as of the last event handled": a change the venue has made but whose event
is still on its way is as invisible to it as to a REST read that raced the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from perpbot.exchange.errors import ExchangeError

log = logging.getLogger(__name__)

WALLET_TTL_S = 60.0

Mark = tuple[int, int, int]


class WalletBalance:
    """``get()``: the balance (cached when valid); ``prefetch()``: start a read in the background."""

    def __init__(
        self,
        read: Callable[[], Awaitable[float]],
        writes: Callable[[], int],
        stream: Callable[[], int | None],
        *,
        ttl_s: float = WALLET_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._writes = writes
        self._stream = stream  # the user stream's connection count while connected, else None
        self.ttl_s = ttl_s
        self._clock = clock
        self._epoch = 0
        self._value: float | None = None
        self._mark: Mark | None = None
        self._at = 0.0
        self._inflight: asyncio.Task[float | None] | None = None
        self._observed_ms = -1  # the event time of the newest ``ACCOUNT_UPDATE`` kept
        self.hits = 0  # entries served without a request (diagnostics, tests)
        self.reads = 0

    def invalidate(self) -> None:
        """A wallet event arrived: the kept value (and any read in flight) is no longer current."""
        self._epoch += 1
        self._value = None

    def observe(self, event_ms: int, wallet_balance: float) -> None:
        """An ``ACCOUNT_UPDATE``'s USDT wallet balance, handled right after ``invalidate``: kept
        when the event is newer than any kept before (else the value stays dropped)."""
        if event_ms <= self._observed_ms:
            return
        self._observed_ms = event_ms
        mark = self._current_mark()
        if mark is not None:
            self._value, self._mark, self._at = wallet_balance, mark, self._clock()

    def _current_mark(self) -> Mark | None:
        conn = self._stream()
        return None if conn is None else (self._epoch, self._writes(), conn)

    def cached(self) -> float | None:
        """The kept value if it is still valid, else None."""
        if self._value is None or self._mark is None:
            return None
        if self._mark != self._current_mark() or self._clock() - self._at > self.ttl_s:
            self._value = None
            return None
        return self._value

    def prefetch(self) -> None:
        """Start a background read unless a valid value or a current read exists (never raises)."""
        if self.cached() is not None or self._inflight is not None or self._current_mark() is None:
            return
        self._inflight = asyncio.ensure_future(self._background())

    async def get(self) -> float:
        """The balance: the kept value, else the read in flight if it stayed valid, else REST."""
        value = self.cached()
        if value is not None:
            self.hits += 1
            return value
        task = self._inflight
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
            value = self.cached()
            if value is not None:
                self.hits += 1
                return value
        return await self._fresh()

    async def _fresh(self) -> float:
        mark = self._current_mark()
        self.reads += 1
        value = await self._read()
        if mark is not None and mark == self._current_mark():
            self._value, self._mark, self._at = value, mark, self._clock()
        return value

    async def _background(self) -> float | None:
        try:
            return await self._fresh()
        except ExchangeError as exc:  # the entry will read again (and see the error itself)
            log.debug("wallet: background balance read failed (%s)", exc)
            return None
        finally:
            self._inflight = None
