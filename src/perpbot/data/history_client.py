"""The HTTP side of the history download: ccxt's async ``binanceusdm`` re-pointed at a configurable
base URL, raw ``fapi`` endpoints with bounded retries (``Retry-After`` wins), and SPEC §7.1 paging.
Every wait goes through the injected ``sleep`` so tests run instantly and still see each pause."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
import pandas as pd
from ccxt.base import errors as ccxt_errors

from perpbot.data.candle_shape import klines_frame
from perpbot.data.schema import BAR_MS
from perpbot.errors import ConfigError, DataError

DEFAULT_FAPI_URL = "https://fapi.binance.com"
INTERVAL = "15m"
KLINES_PAGE = 1500
FUNDING_PAGE = 1000
OI_PAGE = 500
DAY_MS = 86_400_000
# Binance keeps ~30 days of open-interest statistics; ask for a little less so the first window
# is never rejected as too old.
OI_HISTORY_MS = 30 * DAY_MS - 3_600_000
FUNDING_PERIOD_MS = 8 * 3_600_000

Sleep = Callable[[float], Awaitable[None]]


class FetchError(DataError):
    """The exchange could not be reached or kept failing; one line, exit status 2."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential back-off; ``Retry-After`` wins when the server sends it."""

    attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    # A longer ban (418 with a Retry-After of hours) is reported instead of silently waited out.
    max_retry_after_s: float = 600.0

    def backoff(self, attempt: int) -> float:
        return min(self.base_delay_s * 2.0 ** (attempt - 1), self.max_delay_s)


@dataclass(frozen=True, slots=True)
class Pacing:
    """Politeness pauses of SPEC §7.1."""

    page_s: float = 0.3
    stage_s: float = 1.0
    symbol_s: float = 5.0


def resolve_base_url(base_url: str | None, configured: str = "") -> str:
    """``--base-url`` beats ``BINANCE_FAPI_URL`` beats Binance's production host."""
    url = (base_url or configured or DEFAULT_FAPI_URL).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"base URL {url!r}: expected http(s)://host[:port]")
    return url


class _BinanceUsdm(ccxt_async.binanceusdm):
    """ccxt's client plus the last HTTP status and headers, which ccxt's exceptions do not carry.

    The status decides what is retried (a 500 with a JSON body becomes a non-network ccxt error)
    and the headers carry ``Retry-After``. Calls are sequential, so "last" is unambiguous.
    """

    last_status: int | None = None
    last_headers: dict[str, str] | None = None

    def on_rest_response(self, code, reason, url, method, response_headers, response_body, *args):  # type: ignore[no-untyped-def]
        self.last_status = int(code)
        self.last_headers = dict(response_headers or {})
        return super().on_rest_response(code, reason, url, method, response_headers, response_body, *args)


def make_exchange(base_url: str) -> _BinanceUsdm:
    """A public-only client whose ``fapi*`` URLs point at ``base_url`` (tests: a loopback server).

    ccxt's own rate limiter is off: pacing and back-off are ours, so they are visible and
    testable through the injected sleep.
    """
    exchange = _BinanceUsdm({"enableRateLimit": False, "timeout": 30_000})
    api = dict(exchange.urls["api"])
    for key, url in api.items():
        if key.startswith("fapi") and isinstance(url, str):
            api[key] = base_url + urlsplit(url).path
    exchange.urls["api"] = api
    if urlsplit(base_url).scheme == "http":
        # Plain HTTP (a loopback test server): no TLS context to build, and no 250 ms grace
        # period on close, which ccxt keeps only for TLS connections to shut down cleanly.
        exchange.verify = False
        exchange.timeout_on_exit = 0
    return exchange


def _retry_after(headers: dict[str, str] | None) -> float | None:
    for key, value in (headers or {}).items():
        if key.lower() != "retry-after":
            continue
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value) if value else None
            return max(when.timestamp() - time.time(), 0.0) if when else None
    return None


def _retryable(exc: Exception, status: int | None) -> bool:
    """Network failures, 5xx, 429 and 418 are transient; other 4xx (bad symbol…) are not."""
    if status is None:
        return not isinstance(exc, ccxt_errors.BadRequest | ccxt_errors.NotSupported)
    return status in (418, 429) or status >= 500


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:180] + ("…" if len(text) > 180 else "")


@dataclass
class HistoryClient:
    """Paged, retried access to the four public endpoints the history download needs."""

    exchange: _BinanceUsdm
    base_url: str
    sleep: Sleep = asyncio.sleep
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    pacing: Pacing = field(default_factory=Pacing)
    _symbols: dict[str, dict[str, Any]] | None = field(default=None, init=False, repr=False)
    # symbol → (start_ms, now_ms, frame): BTC/ETH are downloaded once per run, not per primary.
    _kline_cache: dict[str, tuple[int, int, pd.DataFrame]] = field(
        default_factory=dict, init=False, repr=False
    )

    async def call(self, what: str, method: str, params: dict[str, Any]) -> Any:
        """One endpoint call with bounded retries; a one-line ``FetchError`` when it gives up."""
        fn = getattr(self.exchange, method)
        for attempt in range(1, self.retry.attempts + 1):
            self.exchange.last_status = None
            self.exchange.last_headers = None
            try:
                return await fn(params)
            except ccxt_errors.BaseError as exc:
                status = self.exchange.last_status
                if not _retryable(exc, status):
                    raise FetchError(f"{what}: {self._describe(status, exc)}") from None
                if attempt == self.retry.attempts:
                    raise FetchError(
                        f"{what}: giving up after {attempt} attempts: {self._describe(status, exc)}"
                    ) from None
                await self.sleep(self._delay(what, attempt, status, exc))
        raise AssertionError("unreachable")  # pragma: no cover

    def _describe(self, status: int | None, exc: BaseException) -> str:
        where = f"HTTP {status}" if status is not None else "no response"
        return f"{where} from {self.base_url}: {_short(exc)}"

    def _delay(self, what: str, attempt: int, status: int | None, exc: BaseException) -> float:
        hinted = _retry_after(self.exchange.last_headers)
        if hinted is None:
            return self.retry.backoff(attempt)
        if hinted > self.retry.max_retry_after_s:
            raise FetchError(
                f"{what}: {self._describe(status, exc)}; server asks to wait {hinted:.0f} s "
                f"(> {self.retry.max_retry_after_s:.0f} s), try again later"
            )
        return hinted

    # -- endpoints ------------------------------------------------------------------------

    async def server_time(self) -> int:
        data = await self.call("server time", "fapiPublicGetTime", {})
        return int(data["serverTime"])

    async def require_symbols(self, symbols: Iterable[str]) -> None:
        """Unknown symbols are a one-line error before any download starts."""
        if self._symbols is None:
            info = await self.call("exchange info", "fapiPublicGetExchangeInfo", {})
            self._symbols = {str(s["symbol"]): s for s in info.get("symbols", [])}
        for sym in symbols:
            if sym not in self._symbols:
                raise ConfigError(
                    f"{sym}: unknown symbol (not listed by Binance USDT-M futures at {self.base_url})"
                )

    async def klines(
        self, symbol: str, start_ms: int, now_ms: int, on_rows: Callable[[int], None] | None = None
    ) -> pd.DataFrame:
        """Closed 15-minute candles with open time in [start_ms, now_ms], OHLCV float64."""
        cached = self._kline_cache.get(symbol)
        if cached is not None and cached[0] <= start_ms and cached[1] == now_ms:
            frame = cached[2]
            if on_rows is not None:
                on_rows(len(frame))
            return frame[frame.index.asi8 >= start_ms]
        rows: list[list[Any]] = []
        cursor = start_ms
        while True:
            page = await self.call(
                f"klines {symbol}",
                "fapiPublicGetKlines",
                {
                    "symbol": symbol,
                    "interval": INTERVAL,
                    "startTime": cursor,
                    "endTime": now_ms,
                    "limit": KLINES_PAGE,
                },
            )
            if not page:
                break
            rows.extend(page)
            if on_rows is not None:
                on_rows(len(page))
            last_open, last_close = int(page[-1][0]), int(page[-1][6])
            if last_open >= now_ms or last_close > now_ms or len(page) < KLINES_PAGE:
                break  # reached "now", the forming candle, or the end of the window
            cursor = last_open + 1
            await self.sleep(self.pacing.page_s)
        frame = klines_frame(rows, now_ms)
        self._kline_cache[symbol] = (start_ms, now_ms, frame)
        return frame

    async def funding(self, symbol: str, start_ms: int, now_ms: int) -> pd.Series:
        """Funding events (``fundingTime`` → rate) from one period before ``start_ms``.

        Starting one period early gives the rate already in force at the first candle.
        """
        events: dict[int, float] = {}
        cursor = start_ms - FUNDING_PERIOD_MS
        while True:
            page = await self.call(
                f"funding history {symbol}",
                "fapiPublicGetFundingRate",
                {"symbol": symbol, "startTime": cursor, "endTime": now_ms, "limit": FUNDING_PAGE},
            )
            if not page:
                break
            for item in page:
                events[int(item["fundingTime"])] = float(item["fundingRate"])
            last = int(page[-1]["fundingTime"])
            if last >= now_ms or len(page) < FUNDING_PAGE:
                break
            cursor = last + 1
            await self.sleep(self.pacing.page_s)
        return pd.Series(events, dtype="float64").sort_index()

    async def open_interest(self, symbol: str, start_ms: int, now_ms: int) -> pd.Series:
        """``sumOpenInterest`` per 15 minutes (timestamp → value), only the retained ~30 days.

        Windows of 500 periods with explicit start and end times: each request is unambiguous
        whatever the server does with a lone ``startTime``.
        """
        values: dict[int, float] = {}
        cursor = max(start_ms, now_ms - OI_HISTORY_MS)
        span = OI_PAGE * BAR_MS
        first = True
        while cursor <= now_ms:
            if not first:
                await self.sleep(self.pacing.page_s)
            first = False
            end = min(cursor + span - 1, now_ms)
            page = await self.call(
                f"open-interest history {symbol}",
                "fapiDataGetOpenInterestHist",
                {"symbol": symbol, "period": INTERVAL, "startTime": cursor, "endTime": end, "limit": OI_PAGE},
            )
            for item in page or []:
                values[int(item["timestamp"])] = float(item["sumOpenInterest"])
            cursor = end + 1
        return pd.Series(values, dtype="float64").sort_index()
