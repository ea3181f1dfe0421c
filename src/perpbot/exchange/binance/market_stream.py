"""Market stream: closed klines of the traded and correlation symbols, in order, without
duplicates and without gaps, plus a latest-price view.

Guarantees to the runtime (``on_candle`` is awaited once per closed candle, per symbol in open-time
order):
- preload over REST first (forming candle dropped: its close time is still in the future);
- a closed kline (``k.x`` true) older than or equal to the last delivered one is a duplicate and
  is dropped; one that skips candles triggers a REST backfill of the missing ones first;
- after every (re)connect, candles closed while deaf are fetched over REST before the socket's
  frames are read;
- every kline frame, closed or not, updates ``latest`` (the position monitor's price);
- watchdogs: no frame for ``silence_s`` (the socket), or, when ``candle_grace_s`` is set, no
  closed candle of a symbol by its close time + grace → reconnect and backfill.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from perpbot import latency
from perpbot.aio import cancel_and_wait
from perpbot.exchange.binance.environment import Endpoints
from perpbot.exchange.binance.ws import STOP_WAIT_S, ResilientSocket, StreamSettings

log = logging.getLogger(__name__)

BAR_MS = 15 * 60_000
INTERVAL = "15m"

FetchKlines = Callable[[str, int | None, int], Awaitable[list[list[Any]]]]


@dataclass(frozen=True, slots=True)
class Candle:
    """One closed candle as the runtime receives it (open time in ms, UTC)."""

    symbol: str
    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float


def candle_from_kline(k: dict[str, Any]) -> Candle:
    """The ``k`` object of a kline event as a ``Candle``."""
    return Candle(
        str(k["s"]), int(k["t"]), float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"])
    )


def candle_from_row(symbol: str, row: list[Any]) -> Candle:
    """One ``GET /fapi/v1/klines`` row as a ``Candle``."""
    return Candle(
        symbol, int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5])
    )


class KlineFeed:
    """Closed candles of ``symbols`` handed to ``on_candle``; see the module docstring."""

    def __init__(
        self,
        endpoints: Endpoints,
        symbols: list[str],
        fetch: FetchKlines,
        on_candle: Callable[[Candle], Awaitable[None]],
        *,
        server_ms: Callable[[], int],
        settings: StreamSettings | None = None,
        preload: int = 300,
        candle_grace_s: float | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.symbols = [s.upper() for s in symbols]
        self._fetch = fetch
        self._on_candle = on_candle
        self.server_ms = server_ms
        self.preload_n = preload
        self.candle_grace_s = candle_grace_s
        self.last_open: dict[str, int] = {}
        self.latest: dict[str, tuple[float, int]] = {}  # symbol -> (last price, event time)
        self.delivered = 0
        self.duplicates = 0
        self.backfilled = 0
        self._lock = asyncio.Lock()
        self._deadline_task: asyncio.Task[None] | None = None
        self.socket = ResilientSocket(
            "market", self._url, self._on_frame, self._backfill_all, settings or StreamSettings()
        )

    async def _url(self) -> str:
        return self.endpoints.market_stream_url([f"{s.lower()}@kline_{INTERVAL}" for s in self.symbols])

    # ------------------------------------------------------------------ lifecycle

    async def preload(self) -> dict[str, list[Candle]]:
        """Closed history of every symbol (concurrently), forming candle dropped; the history is
        returned (not passed to ``on_candle``) and sets where the stream continues."""
        rows = await asyncio.gather(*(self._fetch(s, None, self.preload_n + 1) for s in self.symbols))
        out: dict[str, list[Candle]] = {}
        for sym, rs in zip(self.symbols, rows, strict=True):
            closed = self._closed(sym, rs)[-self.preload_n :]
            out[sym] = closed
            if closed:
                self.last_open[sym] = closed[-1].open_ms
        return out

    def start(self) -> None:
        self.socket.start()
        if self.candle_grace_s is not None and self._deadline_task is None:
            self._deadline_task = asyncio.get_running_loop().create_task(
                self._deadlines(), name="kline-deadlines"
            )

    async def stop(self) -> None:
        if self._deadline_task is not None:
            await cancel_and_wait(self._deadline_task, STOP_WAIT_S)
            self._deadline_task = None
        await self.socket.stop()

    # ------------------------------------------------------------------ frames

    async def _on_frame(self, frame: Any) -> None:
        data = frame.get("data", frame) if isinstance(frame, dict) else None
        if not isinstance(data, dict):
            return
        kind = data.get("e")
        if kind == "error":
            raise ConnectionError(f"stream error payload: {data}")
        if kind != "kline":
            return
        k = data["k"]
        sym = str(k["s"])
        self.latest[sym] = (float(k["c"]), int(data.get("E", 0)))
        if k.get("x") is True:
            c = candle_from_kline(k)
            if latency.PROBE is not None:  # bench/bench_runtime.py only
                latency.PROBE.kline(c.symbol, c.open_ms, self.socket.last_frame)
            await self.closed(c)

    async def closed(self, c: Candle) -> None:
        """One closed candle from the stream: drop duplicates, backfill gaps, deliver in order."""
        async with self._lock:
            last = self.last_open.get(c.symbol)
            if last is not None and c.open_ms <= last:
                self.duplicates += 1
                return
            if last is not None and c.open_ms > last + BAR_MS:
                await self._backfill(c.symbol, until_open=c.open_ms)
            await self._deliver(c)

    async def _deliver(self, c: Candle) -> None:
        self.last_open[c.symbol] = c.open_ms
        self.delivered += 1
        await self._on_candle(c)

    # ------------------------------------------------------------------ REST backfill

    def _closed(self, symbol: str, rows: list[list[Any]]) -> list[Candle]:
        now = self.server_ms()
        return [candle_from_row(symbol, r) for r in rows if int(r[6]) < now]

    async def _backfill(self, symbol: str, until_open: int | None = None) -> None:
        """Deliver the closed candles after the last delivered one (before ``until_open``)."""
        last = self.last_open.get(symbol)
        if last is None:
            return
        while True:
            rows = await self._fetch(symbol, last + BAR_MS, 1000)
            fresh = [
                c
                for c in self._closed(symbol, rows)
                if c.open_ms > self.last_open[symbol] and (until_open is None or c.open_ms < until_open)
            ]
            for c in fresh:
                self.backfilled += 1
                await self._deliver(c)
            if len(rows) < 1000 or not fresh:
                return
            last = self.last_open[symbol]

    async def _backfill_all(self) -> None:
        """On every (re)connect: what closed while the socket was down."""
        async with self._lock:
            for sym in self.symbols:
                await self._backfill(sym)

    async def _deadlines(self) -> None:
        """No closed candle of a symbol by its expected close + grace → reconnect (and backfill)."""
        assert self.candle_grace_s is not None
        grace_ms = int(self.candle_grace_s * 1000)
        while True:
            await asyncio.sleep(max(self.candle_grace_s / 4, 0.05))
            now = self.server_ms()
            for sym in self.symbols:
                last = self.last_open.get(sym)
                if last is not None and now > last + 2 * BAR_MS + grace_ms:
                    self.socket.watchdog_fires += 1
                    self.socket.reconnect(
                        f"{sym}: no closed candle by its close + {self.candle_grace_s:.0f} s"
                    )
                    await asyncio.sleep(self.candle_grace_s)  # let the reconnect and backfill happen
                    break
