"""REST transport of the adapter: one ccxt client, time sync, ``ExchangeError`` translation and the
24-hour ``exchangeInfo`` cache.

Why time sync lives here: Binance refuses a signed request whose timestamp is outside
``recvWindow`` (-1021), and ccxt only measures the offset inside ``load_markets`` (the reference,
§5). The offset is measured at ``open()``, again every 30 minutes, and on -1021 (then the request is
sent once more: a -1021 request was refused before execution, so resending cannot double an
order).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import ccxt

from perpbot.exchange.binance.budget import BannedError, WeightBudget, wall_ms
from perpbot.exchange.binance.ccxt_client import Credentials, PerpbotBinance, make_client, translate
from perpbot.exchange.binance.environment import Endpoints
from perpbot.exchange.errors import ExchangeError

log = logging.getLogger(__name__)

TIME_SYNC_PERIOD_MS = 30 * 60_000
EXCHANGE_INFO_TTL_MS = 24 * 3_600_000
TIMESTAMP_OUTSIDE_WINDOW = -1021


_WRITE = re.compile(r"^(fapi|sapi|papi)(Public|Private)(Post|Put|Delete)")
# The requests that can execute at once (a MARKET order, a LIMIT order crossing the book): the
# only writes of ours that change the wallet by themselves. A cancel, a conditional (algo) order
# resting until it triggers, a leverage or margin-type setting and the listen key do not.
_EXECUTES = re.compile(r"^fapiPrivate(Post|Put)(Order|BatchOrders)$")


class BinanceRest:
    """Signed and public REST calls by ccxt implicit-API name (``fapiPrivatePostOrder`` ...)."""

    def __init__(
        self,
        endpoints: Endpoints,
        creds: Credentials,
        budget: WeightBudget,
        *,
        timeout_ms: int = 10_000,
        recv_window_ms: int = 5_000,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.endpoints = endpoints
        self._creds = creds
        self.now_ms = now_ms
        self.ex: PerpbotBinance = make_client(
            endpoints, creds, budget, timeout_ms=timeout_ms, recv_window_ms=recv_window_ms
        )
        self.recv_window_ms = recv_window_ms
        self._synced_at: int | None = None
        self._info: dict[str, Any] | None = None
        self._info_at = 0
        self.time_syncs = 0  # diagnostics and tests
        # Requests in flight, and the ones that can change the account (POST/PUT/DELETE) started
        # so far: a paper driver knows from these that no answer (and none of the events the
        # venue emits before answering) is still on its way.
        self.in_flight = 0
        self.writes = 0
        self.executing_writes = 0  # of those, the orders that can execute (``wallet.py``)

    def __repr__(self) -> str:
        return f"BinanceRest({self.endpoints.env}, {self.endpoints.fapi})"

    @property
    def time_offset_ms(self) -> int:
        """Local clock minus server clock, as ccxt subtracts it from every signed timestamp."""
        return int(self.ex.options.get("timeDifference", 0))

    async def sync_time(self) -> None:
        """Measure the server-time offset (``GET /fapi/v1/time``)."""
        try:
            await self.ex.load_time_difference()
        except (ccxt.BaseError, BannedError) as exc:
            raise translate(exc, self._secrets()) from None
        self._synced_at = self.now_ms()
        self.time_syncs += 1
        log.debug("binance: server time offset %d ms", self.time_offset_ms)

    async def call(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """One request; -1021 triggers a resync and exactly one more attempt."""
        if _WRITE.search(name):
            self.writes += 1
            if _EXECUTES.match(name):
                self.executing_writes += 1
        self.in_flight += 1
        try:
            return await self._call(name, params)
        finally:
            self.in_flight -= 1

    async def _call(self, name: str, params: dict[str, Any] | None) -> Any:
        if self._synced_at is None or self.now_ms() - self._synced_at >= TIME_SYNC_PERIOD_MS:
            await self.sync_time()
        fn = getattr(self.ex, name)
        for attempt in (1, 2):
            try:
                return await fn(dict(params or {}))
            except (ccxt.BaseError, BannedError) as exc:
                err = translate(exc, self._secrets())
            if err.code == TIMESTAMP_OUTSIDE_WINDOW and attempt == 1:
                log.warning("binance: -1021 timestamp outside recvWindow; resyncing the clock, one retry")
                await self.sync_time()
                continue
            # One line per failed request, so an operator (and the chaos test) can tell which
            # request a 5xx, a 429/418 or a rejection hit; callers decide what happens next.
            log.warning("binance: %s failed (%s: %s)", name, type(err).__name__, err)
            raise err
        raise AssertionError("unreachable")

    async def exchange_info(self) -> dict[str, Any]:
        """``exchangeInfo``, cached 24 h; a failed refresh falls back to the stale copy."""
        now = self.now_ms()
        if self._info is not None and now - self._info_at < EXCHANGE_INFO_TTL_MS:
            return self._info
        try:
            info = await self.call("fapiPublicGetExchangeInfo")
        except ExchangeError as exc:
            if self._info is None:
                raise
            log.warning("binance: exchangeInfo refresh failed (%s); using the cached copy", exc)
            return self._info
        self._info, self._info_at = info, now
        return info

    async def close(self) -> None:
        await self.ex.close()

    def _secrets(self) -> tuple[str, ...]:
        return (self._creds.key, self._creds.secret)
