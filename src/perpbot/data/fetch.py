"""History download from Binance USDT-M futures public endpoints through ccxt's async ``binanceusdm``.

SPEC §7.1 with the §13 corrections (retries with back-off, de-duplication) and three deliberate
choices:

* **Raw endpoints, not ccxt's unified methods.** ``fapiPublicGetKlines`` & co. return Binance's
  documented shapes (kline arrays with their close time, ``fundingTime``, ``sumOpenInterest``)
  without ``load_markets`` and its extra calls, so the exact requests are known and a loopback
  server can answer them in tests.
* **Only closed candles are kept** (close time ≤ server time) and the file records
  ``closed_through_ms``, so the loader never mistakes the forming candle for a real one.
* **Every wait goes through an injected ``sleep``**: page pacing (0.3 s), the pause between the
  two micro downloads (1 s) and between symbols (5 s), and retry back-off. Tests pass a recorder
  and run instantly while still asserting what would have been waited.

The base URL is configurable (``BINANCE_FAPI_URL`` / ``--base-url``): every ``fapi*`` entry of
ccxt's ``urls['api']`` is re-pointed at it, keeping each entry's path.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
import numpy as np
import pandas as pd
from ccxt.base import errors as ccxt_errors
from rich.progress import Progress, TaskID

from perpbot.config import CorrelationMap
from perpbot.data.schema import BAR_MS, BTC_COLS, ETH_COLS, INDEX_NAME, OHLCV, data_path
from perpbot.data.store import load_market, save_market, upsert_market, validate_market
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
OI_MERGE_TOLERANCE = pd.Timedelta(minutes=8)
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


# Resolved at call time, so a test can make a whole CLI run pause-free by replacing it.
DEFAULT_PACING = Pacing()


@dataclass(frozen=True, slots=True)
class FetchSummary:
    """What one symbol's download did, for the CLI to print."""

    symbol: str
    path: Path
    downloaded: int  # closed candles in the fresh download (after the inner join)
    rows: int  # rows in the file now
    first: pd.Timestamp
    last: pd.Timestamp
    funding_events: int
    oi_rows: int  # candles that received a non-zero open-interest change


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
        frame = _klines_frame(rows, now_ms)
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


# --------------------------------------------------------------------------------------------
# Shaping


def _ms_index(ms: np.ndarray | Sequence[int]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True)).as_unit("ms")


def _klines_frame(rows: list[list[Any]], now_ms: int) -> pd.DataFrame:
    """Binance kline arrays → OHLCV frame of closed candles (close time ≤ server time)."""
    closed = [r for r in rows if int(r[6]) <= now_ms]
    if not closed:
        return pd.DataFrame(columns=list(OHLCV), index=_ms_index([]).rename(INDEX_NAME), dtype="float64")
    arr = np.array([[float(x) for x in r[1:6]] for r in closed], dtype=np.float64)
    index = _ms_index([int(r[0]) for r in closed]).rename(INDEX_NAME)
    frame = pd.DataFrame(arr, index=index, columns=list(OHLCV))
    return frame[~frame.index.duplicated(keep="last")].sort_index()


def funding_on_candles(index: pd.DatetimeIndex, events: pd.Series) -> np.ndarray:
    """The latest rate settled by each candle's close, forward-filled; before the first → 0.

    A rate settled at 08:00:00.003 belongs to the 08:00 candle: it is known when that candle
    closes, which is when features are computed.
    """
    if events.empty:
        return np.zeros(len(index))
    known_by = index.asi8 + BAR_MS - 1
    times = events.index.to_numpy(dtype=np.int64)
    pos = np.searchsorted(times, known_by, side="right") - 1
    rates = events.to_numpy(dtype=np.float64)
    out = np.where(pos >= 0, rates[np.clip(pos, 0, None)], 0.0)
    return np.nan_to_num(out, nan=0.0)


def oi_change_on_candles(index: pd.DatetimeIndex, oi: pd.Series) -> np.ndarray:
    """Relative change of ``sumOpenInterest`` (first 0, 0 after a non-positive value), merged onto
    candle open times by nearest timestamp within 8 minutes; candles without a match get 0."""
    if oi.empty:
        return np.zeros(len(index))
    values = oi.to_numpy(dtype=np.float64)
    prev = np.concatenate(([np.nan], values[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(prev > 0, values / prev - 1.0, 0.0)
    change = np.nan_to_num(change, nan=0.0, posinf=0.0, neginf=0.0)
    right = pd.DataFrame({"t": _ms_index(oi.index.to_numpy(dtype=np.int64)), "oi_change": change})
    left = pd.DataFrame({"t": index})
    merged = pd.merge_asof(left, right, on="t", direction="nearest", tolerance=OI_MERGE_TOLERANCE)
    return merged["oi_change"].fillna(0.0).to_numpy(dtype=np.float64)


def combine(primary: pd.DataFrame, btc: pd.DataFrame, eth: pd.DataFrame) -> pd.DataFrame:
    """Primary inner-joined with the correlation candles under their *role* suffixes."""
    btc_roles = btc.set_axis(list(BTC_COLS), axis=1)
    eth_roles = eth.set_axis(list(ETH_COLS), axis=1)
    return primary.join(btc_roles, how="inner").join(eth_roles, how="inner")


# --------------------------------------------------------------------------------------------
# One symbol, many symbols


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """Everything a download needs besides the symbol (the CLI and the script build one)."""

    days: int = 365
    correlation: CorrelationMap = field(default_factory=CorrelationMap)
    with_oi: bool = True
    upsert: bool = True


class _Progress:
    """A thin adapter so the download code never checks for ``None``."""

    def __init__(self, progress: Progress | None, symbol: str, total: int) -> None:
        self._p = progress
        self._symbol = symbol
        self._total = total
        self._task: TaskID | None = progress.add_task(f"fetch {symbol}", total=total) if progress else None

    def advance(self, n: int) -> None:
        if self._p is not None and self._task is not None:
            self._p.advance(self._task, n)

    def stage(self, name: str) -> None:
        if self._p is not None and self._task is not None:
            self._p.update(self._task, description=f"fetch {self._symbol}: {name}")

    def done(self) -> None:
        if self._p is not None and self._task is not None:
            self._p.update(self._task, completed=self._total, description=f"fetch {self._symbol}")


def _existing(path: Path, upsert: bool) -> pd.DataFrame | None:
    """The stored frame to upsert into; a corrupt file is an error (``--no-upsert`` overwrites)."""
    if not upsert or not path.exists():
        return None
    return load_market(path)


async def fetch_symbol(
    client: HistoryClient,
    symbol: str,
    path: Path,
    now_ms: int,
    options: FetchOptions,
    progress: Progress | None = None,
) -> FetchSummary:
    """Download one primary symbol with its correlation candles, funding and OI; upsert; save.

    With an existing file the download starts no later than the candle after its last one, so
    the upserted file never has a hole between old and new rows.
    """
    stored = _existing(path, options.upsert)
    start_ms = (now_ms - options.days * DAY_MS) // BAR_MS * BAR_MS
    if stored is not None:
        start_ms = min(start_ms, int(stored.index.asi8[-1]) + BAR_MS)
    bar = _Progress(progress, symbol, total=3 * max((now_ms - start_ms) // BAR_MS, 1))

    legs: list[pd.DataFrame] = []
    for sym in (symbol, options.correlation.btc, options.correlation.eth):
        bar.stage(f"klines {sym}")
        frame = await client.klines(sym, start_ms, now_ms, on_rows=bar.advance)
        if frame.empty:
            raise FetchError(
                f"klines {sym}: no closed candles since {_ms_index([start_ms])[0]:%Y-%m-%d %H:%M} UTC"
            )
        legs.append(frame)
    market = combine(*legs)
    if market.empty:
        raise FetchError(
            f"{symbol}: no candle times shared with {options.correlation.btc}/{options.correlation.eth}"
        )

    bar.stage("funding")
    events = await client.funding(symbol, int(market.index.asi8[0]), now_ms)
    market["funding_rate"] = funding_on_candles(market.index, events)
    market["oi_change"] = 0.0
    if options.with_oi:
        await client.sleep(client.pacing.stage_s)
        bar.stage("open interest")
        oi = await client.open_interest(symbol, int(market.index.asi8[0]), now_ms)
        market["oi_change"] = oi_change_on_candles(market.index, oi)
    fresh = validate_market(market, f"download of {symbol} from {client.base_url}")

    merged = upsert_market(stored, fresh) if stored is not None else fresh
    save_market(merged, path, closed_through_ms=int(merged.index.asi8[-1]))
    bar.done()
    return FetchSummary(
        symbol=symbol,
        path=path,
        downloaded=len(fresh),
        rows=len(merged),
        first=merged.index[0],
        last=merged.index[-1],
        funding_events=len(events),
        oi_rows=int((fresh["oi_change"] != 0.0).sum()),
    )


async def fetch_history_async(
    symbols: Sequence[str],
    *,
    data_dir: Path = Path("data"),
    output: Path | None = None,
    options: FetchOptions | None = None,
    base_url: str = DEFAULT_FAPI_URL,
    progress: Progress | None = None,
    sleep: Sleep | None = None,
    retry: RetryPolicy | None = None,
    pacing: Pacing | None = None,
) -> list[FetchSummary]:
    """Fetch each symbol into ``data/<sym>/combined_15m.parquet`` (or ``output`` for one symbol).

    One client and one server-time reading for the whole run; the correlation candles are
    downloaded once and reused across symbols.
    """
    opts = options or FetchOptions()
    if opts.days < 1:
        raise ConfigError(f"--days={opts.days}: must be >= 1")
    if output is not None and len(symbols) != 1:
        raise ConfigError("--output needs exactly one symbol")
    clash = set(symbols) & set(opts.correlation.as_tuple())
    if clash:
        raise ConfigError(f"{sorted(clash)[0]}: is a correlation symbol, not a tradable primary here")
    url = resolve_base_url(base_url)
    nap = sleep or asyncio.sleep
    client = HistoryClient(make_exchange(url), url, nap, retry or RetryPolicy(), pacing or DEFAULT_PACING)
    try:
        now_ms = await client.server_time()
        await client.require_symbols([*symbols, *opts.correlation.as_tuple()])
        results: list[FetchSummary] = []
        for i, sym in enumerate(symbols):
            if i:
                await nap(client.pacing.symbol_s)
            path = output if output is not None else data_path(data_dir, sym)
            results.append(await fetch_symbol(client, sym, path, now_ms, opts, progress))
        return results
    finally:
        await client.exchange.close()


def fetch_history(symbols: Sequence[str], **kwargs: Any) -> list[FetchSummary]:
    """Synchronous entry point for the CLI and ``scripts/fetch_history.py``."""
    return asyncio.run(fetch_history_async(symbols, **kwargs))
