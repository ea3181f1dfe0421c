"""Placing an order exactly once when answers get lost, and reading paged history.

Why: a timeout, a dropped connection, a 503 "Unknown error" or -1007 leave the outcome unknown;
Binance may have executed the order. Resending blindly can open a second position, giving up can
leave a position without its stop. ``IdempotentPlacer`` asks Binance for the client id first:
found → adopt it; unknown (-2013) → resend under the *same* id (Binance refuses a duplicate open
id with -4116, which again leads to adopting). Only a bounded number of sends is made; after that
the caller gets ``ExchangeUnavailable`` and must reconcile (fail closed).

"Unknown" is only trusted once the lost request can no longer execute: Binance refuses a request
that reaches it later than ``timestamp + recvWindow``, so before resending, the placer waits until
``in_flight_s`` (recvWindow plus a margin) has passed since the request was signed (``signed_at``:
a request can wait in the weight budget's 429 back-off long after the call began) and looks
again. Without that wait, a request delayed on its way (a slow network, a timed-out client) could
execute *after* the resend, and the position would be doubled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from perpbot.exchange.errors import NO_SUCH_ORDER, UNKNOWN_ORDER, ExchangeError, ExchangeUnavailable

log = logging.getLogger(__name__)

DUPLICATE_CLIENT_ID = -4116
PLACE_ATTEMPTS = 3  # sends of one order (same client id) before the caller gets the unknown outcome
QUERY_ATTEMPTS = 4  # lookups of one client id after an unknown outcome
PAGE = 1000  # Binance's page size for income and userTrades

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]


class IdempotentPlacer:
    """Sends an order request; on an unknown outcome adopts or resends the same client id."""

    def __init__(
        self,
        call: Call,
        *,
        retry_delay_s: float = 0.2,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        seed: int = 0x5EED,
        in_flight_s: float = 5.5,
        clock: Callable[[], float] = time.monotonic,
        signed_at: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._call = call
        self.retry_delay_s = retry_delay_s
        self._sleep = sleep
        self._rng = random.Random(seed)
        self.in_flight_s = in_flight_s
        self._clock = clock
        self._signed_at = signed_at  # on ``clock``'s scale: when this task last signed a request
        self.adopted = 0
        self.resent = 0

    async def place(
        self, name: str, params: dict[str, Any], lookup: Callable[[], Awaitable[Any]], cid: str
    ) -> Any:
        last: ExchangeError | None = None
        for attempt in range(1, PLACE_ATTEMPTS + 1):
            if attempt > 1:
                self.resent += 1
            sent = self._clock()
            try:
                return await self._call(name, params)
            except ExchangeUnavailable as exc:
                last = exc
                log.warning("binance: %s %s outcome unknown (%s); looking it up", name, cid, exc)
            except ExchangeError as exc:
                if exc.code != DUPLICATE_CLIENT_ID or attempt == 1:
                    raise
                last = exc  # our earlier send did arrive: adopt it below
            sent = max(sent, self._signed_at())  # the lost request's timestamp is from then
            found = await self._lookup(lookup, cid)
            wait = sent + self.in_flight_s - self._clock()
            if found is None and wait > 0:
                log.warning(
                    "binance: %s not found yet; waiting %.1f s until the lost request expires", cid, wait
                )
                await self._sleep(wait)
                found = await self._lookup(lookup, cid)
            if found is not None:
                self.adopted += 1
                log.warning("binance: adopted %s (client id %s) instead of sending it again", name, cid)
                return found
            await self._sleep(self.backoff(attempt))
        assert last is not None
        raise ExchangeUnavailable(f"{cid}: outcome unknown after {PLACE_ATTEMPTS} sends ({last})")

    async def _lookup(self, lookup: Callable[[], Awaitable[Any]], cid: str) -> Any | None:
        """The order placed under ``cid``, None when Binance does not know it (-2013)."""
        for attempt in range(1, QUERY_ATTEMPTS + 1):
            try:
                return await lookup()
            except ExchangeUnavailable as exc:
                log.warning("binance: lookup of %s failed (%s), attempt %d", cid, exc, attempt)
                await self._sleep(self.backoff(attempt))
            except ExchangeError as exc:
                if exc.code in (NO_SUCH_ORDER, UNKNOWN_ORDER):
                    return None
                raise
        raise ExchangeUnavailable(f"{cid}: cannot tell whether the order exists (lookups failed)")

    def backoff(self, attempt: int) -> float:
        """Exponential, with jitter in [0.5, 1.5)."""
        return self.retry_delay_s * (2 ** (attempt - 1)) * (0.5 + self._rng.random())


async def paged(
    call: Call, name: str, base: dict[str, Any], start_ms: int, key: Callable[[dict[str, Any]], Any]
) -> list[dict[str, Any]]:
    """All rows from ``start_ms``, 1000 a page by ``startTime``: the next page starts at the last
    row's time (rows of that same millisecond come again and are de-duplicated by ``key``)."""
    out: list[dict[str, Any]] = []
    seen: set[Any] = set()
    start = max(int(start_ms), 0)
    while True:
        page = await call(name, {**base, "startTime": start})
        fresh = [r for r in page if key(r) not in seen]
        for r in fresh:
            seen.add(key(r))
        out.extend(fresh)
        if len(page) < PAGE or not fresh:
            break
        start = int(page[-1]["time"])
    out.sort(key=lambda r: int(r["time"]))
    return out


async def trades_since(call: Call, symbol: str, start_ms: int) -> list[dict[str, Any]]:
    """``userTrades`` rows of ``symbol`` since ``start_ms``, up to now, oldest first.

    Binance answers a ``startTime`` alone with the 7 days from it and nothing later, so paging by
    time stops a week after ``start_ms`` (a position held longer, a stream resync whose last
    execution is older, an account with none yet). What follows the last row found is read on by
    trade id (``fromId``, no time limit); when those 7 days hold none, the latest rows (Binance:
    the last 7 days) are taken instead.
    """
    name = "fapiPrivateGetUserTrades"
    base: dict[str, Any] = {"symbol": symbol, "limit": PAGE}
    rows = await paged(call, name, base, start_ms, _trade_id)
    if rows:
        next_id = max(_trade_id(r) for r in rows) + 1
        while True:
            page = await call(name, {**base, "fromId": next_id})
            rows += [r for r in page if _trade_id(r) >= next_id]
            if len(page) < PAGE:
                break
            next_id = max(_trade_id(r) for r in page) + 1
    else:
        rows = [r for r in await call(name, base) if int(r["time"]) >= start_ms]
    rows.sort(key=lambda r: (int(r["time"]), _trade_id(r)))
    return rows


def _trade_id(row: dict[str, Any]) -> int:
    return int(row["id"])
