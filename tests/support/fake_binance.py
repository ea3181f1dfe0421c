"""A loopback stand-in for Binance USDT-M futures' public REST API, for tests only.

It binds 127.0.0.1 on a free port and answers, in Binance's documented response shapes:

* ``GET /fapi/v1/time`` — ``{"serverTime": ms}`` (the fake's fixed clock, ``now_ms``);
* ``GET /fapi/v1/exchangeInfo`` — symbols with PRICE_FILTER / LOT_SIZE / MIN_NOTIONAL filters;
* ``GET /fapi/v1/klines`` — arrays ``[openTime, "o", "h", "l", "c", "v", closeTime,
  "quoteVolume", trades, "takerBuyBase", "takerBuyQuote", "0"]``; the candle containing
  ``now_ms`` is served as the forming one (close time in the future);
* ``GET /fapi/v1/fundingRate`` — ``{"symbol", "fundingTime", "fundingRate", "markPrice"}``;
* ``GET /futures/data/openInterestHist`` — ``{"symbol", "sumOpenInterest",
  "sumOpenInterestValue", "timestamp"}``, only for the last 30 days like the real service.

Errors use Binance's ``{"code": -1121, "msg": "Invalid symbol."}`` form. Faults are queued per
path and consumed one per request (429/418 with ``Retry-After``, 5xx, a dropped connection), and
every request is logged so tests can assert what the client really asked for. Any other path
answers 404 and is logged too: that is how a test proves the client makes no unexpected calls.

Two ways to run it: ``async with FakeBinance(...) as fake`` inside a test's event loop, or
``with fake.running_in_thread() as base_url`` for synchronous code (a CLI run with its own
``asyncio.run``). The values are served as ``repr(float)`` strings, which round-trip exactly, so a
downloaded frame can be compared bit for bit with the frame the fake was built from.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from aiohttp import web

BAR_MS = 15 * 60_000
DAY_MS = 86_400_000
OI_RETENTION_MS = 30 * DAY_MS
FUNDING_PERIOD_MS = 8 * 3_600_000
_OHLCV = ("open", "high", "low", "close", "volume")

PATH_TIME = "/fapi/v1/time"
PATH_EXCHANGE_INFO = "/fapi/v1/exchangeInfo"
PATH_KLINES = "/fapi/v1/klines"
PATH_FUNDING = "/fapi/v1/fundingRate"
PATH_OI_HIST = "/futures/data/openInterestHist"
KNOWN_PATHS = (PATH_TIME, PATH_EXCHANGE_INFO, PATH_KLINES, PATH_FUNDING, PATH_OI_HIST)


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure, consumed by the next request to its path."""

    status: int = 0  # 0 = drop the connection without answering
    retry_after: str | None = None
    body: Mapping[str, Any] | None = None

    @classmethod
    def rate_limited(cls, retry_after: float | None = 1) -> Fault:
        return cls(
            429,
            _fmt_retry(retry_after),
            {"code": -1003, "msg": "Too many requests; current limit is 2400 request weight per 1 MINUTE."},
        )

    @classmethod
    def banned(cls, retry_after: float | None = 1) -> Fault:
        return cls(418, _fmt_retry(retry_after), {"code": -1003, "msg": "Way too many requests; IP banned."})

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls(
            status, None, {"code": -1000, "msg": "An unknown error occured while processing the request."}
        )

    @classmethod
    def drop(cls) -> Fault:
        """Close the socket without answering.

        aiohttp clients silently retry a dropped *reused* keep-alive connection once, so one drop
        may never reach the client's own retry logic; queue two or more to be sure it does.
        """
        return cls(0)


def _fmt_retry(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request as the server saw it; ``status`` 0 means the connection was dropped."""

    method: str
    path: str
    params: dict[str, str]
    status: int


@dataclass
class Instrument:
    """What the fake knows about one symbol.

    ``candles``: OHLCV float columns, UTC index of open times. ``funding``: fundingTime (ms) →
    rate. ``open_interest``: timestamp (ms) → sumOpenInterest.
    """

    symbol: str
    candles: pd.DataFrame
    funding: pd.Series = field(default_factory=lambda: pd.Series(dtype="float64"))
    open_interest: pd.Series = field(default_factory=lambda: pd.Series(dtype="float64"))
    tick_size: str = "0.0001"
    step_size: str = "0.1"
    _open_ms: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._open_ms = self.candles.index.asi8.astype(np.int64)


def _window(times: np.ndarray, start: int | None, end: int | None, limit: int) -> slice:
    """Binance's paging rule: from ``startTime`` forward, else the most recent ``limit`` items."""
    lo = 0 if start is None else int(np.searchsorted(times, start, side="left"))
    hi = len(times) if end is None else int(np.searchsorted(times, end, side="right"))
    if start is None:
        return slice(max(hi - limit, lo), hi)
    return slice(lo, min(lo + limit, hi))


class _BadRequest(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


class FakeBinance:
    """The loopback server. Build it with ``from_market`` or from ``Instrument`` objects."""

    def __init__(self, instruments: Mapping[str, Instrument], now_ms: int) -> None:
        self.instruments = dict(instruments)
        self.now_ms = int(now_ms)
        self.requests: list[LoggedRequest] = []
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_market(
        cls,
        market: pd.DataFrame,
        *,
        symbol: str = "XRPUSDT",
        btc: str = "BTCUSDT",
        eth: str = "ETHUSDT",
        now_ms: int | None = None,
        funding_offset_ms: int = 0,
    ) -> FakeBinance:
        """Serve a schema frame: primary columns as ``symbol``, ``*_btc`` as ``btc``, ``*_eth`` as ``eth``.

        Funding events are the frame's ``funding_rate`` at 00/08/16 UTC candles (plus
        ``funding_offset_ms``, as real settlement times can be a few ms late). The primary's open
        interest is rebuilt from ``oi_change`` (sumOpenInterest = 1e8·∏(1+oi_change)). ``now_ms``
        defaults to 7 minutes into the last candle, which is then the forming one.
        """
        open_ms = market.index.asi8.astype(np.int64)
        now = int(open_ms[-1] + 7 * 60_000) if now_ms is None else int(now_ms)
        settle = open_ms % FUNDING_PERIOD_MS == 0
        funding = pd.Series(
            market["funding_rate"].to_numpy()[settle],
            index=open_ms[settle] + funding_offset_ms,
            dtype="float64",
        )
        oi = pd.Series(1e8 * np.cumprod(1.0 + market["oi_change"].to_numpy()), index=open_ms, dtype="float64")

        def leg(suffix: str) -> pd.DataFrame:
            cols = [f"{c}{suffix}" for c in _OHLCV]
            return market[cols].set_axis(list(_OHLCV), axis=1)

        instruments = {
            symbol: Instrument(symbol, leg(""), funding, oi),
            btc: Instrument(btc, leg("_btc"), funding, tick_size="0.1", step_size="0.001"),
            eth: Instrument(eth, leg("_eth"), funding, tick_size="0.01", step_size="0.001"),
        }
        return cls(instruments, now)

    # -- faults and the request log ---------------------------------------------------------

    def add_faults(self, path: str, *faults: Fault) -> None:
        """Queue faults for ``path``; each request to it consumes one before normal service."""
        with self._lock:
            self._faults[path].extend(faults)

    def calls(self, path: str | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.popleft() if queue else None

    def _log(self, request: web.Request, status: int) -> None:
        with self._lock:
            self.requests.append(LoggedRequest(request.method, request.path, dict(request.query), status))

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBinance:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @contextmanager
    def running_in_thread(self) -> Iterator[str]:
        """Serve from a background thread with its own event loop; yields the base URL."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="fake-binance", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Binance server did not start")
        try:
            yield self.base_url
        finally:
            asyncio.run_coroutine_threadsafe(self.close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    # -- HTTP -------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        fault = self._next_fault(request.path)
        if fault is not None:
            return self._fail(request, fault)
        handler = {
            PATH_TIME: self._time,
            PATH_EXCHANGE_INFO: self._exchange_info,
            PATH_KLINES: self._klines,
            PATH_FUNDING: self._funding,
            PATH_OI_HIST: self._oi_hist,
        }.get(request.path)
        if handler is None or request.method != "GET":
            self._log(request, 404)
            return web.json_response(
                {"code": -5000, "msg": f"Path {request.path}, Method {request.method} is invalid"}, status=404
            )
        try:
            payload = handler(request.query)
        except _BadRequest as exc:
            self._log(request, exc.status)
            return web.json_response({"code": exc.code, "msg": exc.msg}, status=exc.status)
        self._log(request, 200)
        return web.json_response(payload)

    def _fail(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        self._log(request, fault.status)
        if fault.status == 0:
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never reaches the client: the socket is closed
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        return web.json_response(dict(fault.body or {}), status=fault.status, headers=headers)

    # -- endpoint bodies ----------------------------------------------------------------------

    def _instrument(self, query: Mapping[str, str]) -> Instrument:
        symbol = query.get("symbol", "")
        if not symbol:
            raise _BadRequest(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        inst = self.instruments.get(symbol)
        if inst is None:
            raise _BadRequest(-1121, "Invalid symbol.")
        return inst

    @staticmethod
    def _int(query: Mapping[str, str], name: str) -> int | None:
        raw = query.get(name)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            raise _BadRequest(
                -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
            ) from None

    def _limit(self, query: Mapping[str, str], default: int, maximum: int) -> int:
        limit = self._int(query, "limit")
        if limit is None:
            return default
        if not 1 <= limit <= maximum:
            raise _BadRequest(-1130, "Data sent for parameter 'limit' is not valid.")
        return limit

    def _time(self, query: Mapping[str, str]) -> dict[str, Any]:
        return {"serverTime": self.now_ms}

    def _exchange_info(self, query: Mapping[str, str]) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [self._symbol_info(inst) for inst in self.instruments.values()],
        }

    @staticmethod
    def _symbol_info(inst: Instrument) -> dict[str, Any]:
        base = inst.symbol.removesuffix("USDT")
        price_decimals = max(len(inst.tick_size.rstrip("0").partition(".")[2]), 0)
        qty_decimals = max(len(inst.step_size.rstrip("0").partition(".")[2]), 0)
        return {
            "symbol": inst.symbol,
            "pair": inst.symbol,
            "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000,
            "status": "TRADING",
            "baseAsset": base,
            "quoteAsset": "USDT",
            "marginAsset": "USDT",
            "pricePrecision": price_decimals,
            "quantityPrecision": qty_decimals,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "triggerProtect": "0.0500",
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": inst.tick_size,
                    "maxPrice": "1000000",
                    "tickSize": inst.tick_size,
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": inst.step_size,
                    "maxQty": "10000000",
                    "stepSize": inst.step_size,
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": inst.step_size,
                    "maxQty": "1000000",
                    "stepSize": inst.step_size,
                },
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MIN_NOTIONAL", "notional": "5"},
                {
                    "filterType": "PERCENT_PRICE",
                    "multiplierUp": "1.0500",
                    "multiplierDown": "0.9500",
                    "multiplierDecimal": "4",
                },
            ],
            "orderTypes": [
                "LIMIT",
                "MARKET",
                "STOP",
                "STOP_MARKET",
                "TAKE_PROFIT",
                "TAKE_PROFIT_MARKET",
                "TRAILING_STOP_MARKET",
            ],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
        }

    def _klines(self, query: Mapping[str, str]) -> list[list[Any]]:
        inst = self._instrument(query)
        if query.get("interval") != "15m":
            raise _BadRequest(-1120, "Invalid interval.")
        limit = self._limit(query, 500, 1500)
        end = self._int(query, "endTime")
        end = self.now_ms if end is None else min(end, self.now_ms)
        window = _window(inst._open_ms, self._int(query, "startTime"), end, limit)
        frame = inst.candles.iloc[window]
        rows = []
        for open_ms, (o, h, lo, c, v) in zip(
            inst._open_ms[window].tolist(), frame.itertuples(index=False), strict=True
        ):
            rows.append([
                open_ms, repr(o), repr(h), repr(lo), repr(c), repr(v), open_ms + BAR_MS - 1,
                repr(round(v * c, 4)), 100, repr(round(v / 2, 3)), repr(round(v * c / 2, 4)), "0",
            ])  # fmt: skip
        return rows

    def _funding(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        inst = self._instrument(query)
        limit = self._limit(query, 100, 1000)
        events = inst.funding[inst.funding.index <= self.now_ms]
        times = events.index.to_numpy(dtype=np.int64)
        window = _window(times, self._int(query, "startTime"), self._int(query, "endTime"), limit)
        mark = repr(float(inst.candles["close"].iloc[-1]))
        return [
            {"symbol": inst.symbol, "fundingTime": int(t), "fundingRate": f"{r:.8f}", "markPrice": mark}
            for t, r in zip(times[window].tolist(), events.to_numpy()[window].tolist(), strict=True)
        ]

    def _oi_hist(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        inst = self._instrument(query)
        if query.get("period") not in ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"):
            raise _BadRequest(-1130, "Data sent for parameter 'period' is not valid.")
        if query.get("period") != "15m":
            raise _BadRequest(-1130, "This fake serves period=15m only.")
        limit = self._limit(query, 30, 500)
        start = self._int(query, "startTime")
        if start is not None and start < self.now_ms - OI_RETENTION_MS:
            raise _BadRequest(-1130, "Data sent for parameter 'startTime' is not valid.")
        oi = inst.open_interest
        oi = oi[(oi.index >= self.now_ms - OI_RETENTION_MS) & (oi.index <= self.now_ms)]
        times = oi.index.to_numpy(dtype=np.int64)
        window = _window(times, start, self._int(query, "endTime"), limit)
        close = inst.candles["close"].reindex(
            pd.to_datetime(times[window], unit="ms", utc=True).as_unit("ms")
        )
        return [
            {
                "symbol": inst.symbol,
                "sumOpenInterest": repr(float(v)),
                "sumOpenInterestValue": repr(round(float(v) * float(px), 8)) if px == px else "0",
                "timestamp": int(t),
            }
            for t, v, px in zip(
                times[window].tolist(), oi.to_numpy()[window].tolist(), close.tolist(), strict=True
            )
        ]
