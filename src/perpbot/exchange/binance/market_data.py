"""Public market reads of the adapter: klines (preload and backfill), and the live features'
open interest, open-interest history and funding rate with SPEC §2.3's fallbacks (a failed read
is a neutral value for the feature, never an exception that stops a bot)."""

from __future__ import annotations

import logging
from typing import Any

from perpbot.exchange.binance.codec.decimals import num
from perpbot.exchange.binance.rest import BinanceRest
from perpbot.exchange.errors import ExchangeError

log = logging.getLogger(__name__)


class PublicReads:
    """Mixin of ``BinanceExchange``: reads that need no key, through its ``rest``."""

    rest: BinanceRest

    async def klines(
        self, symbol: str, interval: str, *, start_ms: int | None = None, limit: int = 500
    ) -> list[list[Any]]:
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": int(limit)}
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        rows: list[list[Any]] = await self.rest.call("fapiPublicGetKlines", params)
        return rows

    async def open_interest(self, symbol: str) -> float | None:
        """Current open interest; None on any failure (SPEC §2.3 fallback: ``oi_change`` 0)."""
        try:
            d = await self.rest.call("fapiPublicGetOpenInterest", {"symbol": symbol})
            return num(d.get("openInterest"))
        except ExchangeError as exc:
            log.warning("binance: open interest of %s unavailable (%s)", symbol, exc)
            return None

    async def open_interest_history(
        self, symbol: str, limit: int = 6, *, end_ms: int | None = None
    ) -> list[tuple[int, float]] | None:
        """``(timestamp ms, sumOpenInterest)`` of the last ``limit`` (≤ 500) 15-minute rows, up to
        ``end_ms`` when given, oldest first; None on any failure, so that a failed read is not
        mistaken for no history (SPEC §2.3 start-up seeding: none means the first live
        ``oi_change`` is 0). The timestamp is the snapshot's time, which places each change on the
        candle that closed then (``runtime.window.oi_seed``). The venue keeps only ~30 days."""
        params: dict[str, Any] = {"symbol": symbol, "period": "15m", "limit": int(limit)}
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        try:
            rows = await self.rest.call("fapiDataGetOpenInterestHist", params)
            return sorted((int(r["timestamp"]), num(r.get("sumOpenInterest"))) for r in rows)
        except ExchangeError as exc:
            log.warning("binance: open-interest history of %s unavailable (%s)", symbol, exc)
            return None

    async def funding_rate(self, symbol: str) -> float | None:
        """``premiumIndex.lastFundingRate``; None on any failure (SPEC §2.3 fallback: 0.0)."""
        try:
            d = await self.rest.call("fapiPublicGetPremiumIndex", {"symbol": symbol})
            return num(d.get("lastFundingRate"))
        except ExchangeError as exc:
            log.warning("binance: premium index of %s unavailable (%s)", symbol, exc)
            return None

    async def funding_rate_history(
        self, symbol: str, start_ms: int, end_ms: int, limit: int = 1000
    ) -> list[tuple[int, float]] | None:
        """``(fundingTime ms, fundingRate)`` of the settlements from ``start_ms`` to ``end_ms``
        (at most ``limit`` ≤ 1000, oldest first): the settled rates the training data is built
        from (``data.candle_shape.funding_on_candles``). None on any failure (a seed without
        funding: the features see it missing, as SPEC §2.3's fallback 0.0 does)."""
        params = {"symbol": symbol, "startTime": int(start_ms), "endTime": int(end_ms), "limit": int(limit)}
        try:
            rows = await self.rest.call("fapiPublicGetFundingRate", params)
            return sorted((int(r["fundingTime"]), num(r.get("fundingRate"))) for r in rows)
        except ExchangeError as exc:
            log.warning("binance: funding history of %s unavailable (%s)", symbol, exc)
            return None
