"""A WebSocket that stays connected: back-off with jitter, silence watchdog, proactive renewal.

Why not ccxt.pro (the reference, §1-§3): it drops the kline closed flag ``k.x``, merges partial
fills per order id, re-arms the listen-key keep-alive only once, ignores ``listenKeyExpired``,
hangs forever on a connected-but-silent socket, and reconnects only when the next ``watch_*`` call
happens. Each needs an override of a private method; a thin aiohttp client that hands every raw
frame to the shared codec is smaller than those overrides and cannot silently lose a frame.

Loop: ``url()`` (a fresh listen key for the user stream) → connect → ``on_open()`` (REST backfill
and resync; frames that arrive meanwhile wait in the socket) → read. A frame of any kind resets
the silence timer; ``silence_s`` without one, ``max_age_s`` of connection age (Binance cuts at
24 h) or ``reconnect()`` closes the socket and starts over. Failures wait ``backoff_s`` doubling
up to ``backoff_max_s``, each wait scaled by a random factor in [0.5, 1.5).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from perpbot.aio import cancel_and_wait
from perpbot.alerts.redact import hide_listen_keys

log = logging.getLogger(__name__)
STOP_WAIT_S = 10.0  # a stopped socket's task gets this long to end (its close waits 2 s)
BUSY_POLL_S = 0.05  # how often silence is looked at again while a frame is still being handled


@dataclass(slots=True)
class StreamSettings:
    silence_s: float = 90.0  # market klines arrive every few seconds; a user stream may set more
    max_age_s: float = 23.5 * 3600  # renew before Binance's 24 h cut
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    connect_timeout_s: float = 10.0
    # Start-up: the first connection must be up within this (retries included), or start-up
    # fails closed (``BinanceExchange.start_user_stream``): a venue that never answers the
    # WebSocket upgrade must not hang the process before its first order.
    first_connect_s: float = 60.0
    # True: only data frames reset the silence timer (a market stream that answers pings but
    # sends no klines is deaf); False: any frame does (an idle user stream is only pinged).
    data_only: bool = True


class ResilientSocket:
    """Runs until ``stop()``; ``on_frame`` gets every decoded JSON frame in arrival order."""

    def __init__(
        self,
        name: str,
        url: Callable[[], Awaitable[str]],
        on_frame: Callable[[Any], Awaitable[None]],
        on_open: Callable[[], Awaitable[None]],
        settings: StreamSettings,
        *,
        seed: int = 0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._url = url
        self._on_frame = on_frame
        self._on_open = on_open
        self.s = settings
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._kick = asyncio.Event()
        self.connects = 0
        self.failures = 0
        self.watchdog_fires = 0
        self.renewals = 0
        self.last_frame = time.monotonic()
        self._receiving = False  # the reader waits for a frame (not handling one)
        self._halting = False  # the reader stops after the frame it is handling
        self.connected = asyncio.Event()
        # Outage bookkeeping for the operator's alert (``perpbot.alerts.streams``): the monotonic
        # time since which the stream has not delivered (set when a connection fails or dies; the
        # last frame heard), cleared by the next frame that resets the watchdog (a data frame
        # when ``data_only``; for other sockets also a successful connect). ``last_error`` says why.
        self.outage_since: float | None = None
        self.last_error = ""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"ws-{self.name}")

    async def stop(self) -> None:
        """End the connection task. Cancelled again until it ends (``perpbot.aio``): on 3.11 a
        cancellation that lands while ``ws_connect`` completes is lost, and a single ``await``
        of the task then waited forever while it went on reading (brief h15hang)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task, STOP_WAIT_S)

    def reconnect(self, why: str) -> None:
        """Close the current socket and connect again (new listen key, backfill, resync)."""
        log.warning("%s stream: reconnecting (%s)", self.name, why)
        self._kick.set()

    def backoff(self, attempt: int) -> float:
        base = min(self.s.backoff_s * (2 ** max(attempt - 1, 0)), self.s.backoff_max_s)
        return base * (0.5 + self._rng.random())

    async def _run(self) -> None:
        attempt = 0
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self._session(session)
                    attempt = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    attempt += 1
                    self.failures += 1
                    self.last_error = _one_line(exc)  # listen key masked
                    if self.outage_since is None:
                        self.outage_since = self.last_frame
                    delay = self.backoff(attempt)
                    log.warning(
                        "%s stream: %s; attempt %d, next try in %.1f s",
                        self.name,
                        self.last_error,
                        attempt,
                        delay,
                    )
                    await self._sleep(delay)

    async def _session(self, session: aiohttp.ClientSession) -> None:
        """One connection's life; returns normally when it should be renewed at once."""
        url = await self._url()
        self._kick.clear()
        ws = await asyncio.wait_for(
            session.ws_connect(
                url,
                autoping=False,
                heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                max_msg_size=4 * 1024 * 1024,
            ),
            self.s.connect_timeout_s,
        )
        self._ws = ws
        self.connects += 1
        opened = time.monotonic()
        self.last_frame = opened
        try:
            await self._on_open()
            self.connected.set()
            if not self.s.data_only:
                self.outage_since = None
            await self._read(ws, opened)
        finally:
            self.connected.clear()
            self._ws = None
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2.0)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, opened: float) -> None:
        """Watch one connection's reader (``_frames``): renewal, ``reconnect()``, silence.

        Why the frames are read by a task of their own and not one ``receive`` future per frame:
        a frame already in the socket is then taken without yielding to the event loop, so a
        candle close's burst of klines (the primary's, BTC's, ETH's) is read in one go, before
        the candle jobs it starts take the loop; one future and one ``asyncio.wait`` per frame
        let every job run between two frames, and the last kline waited in our own socket for
        the others' work (docs/ARCHITECTURE.md, "Decision latency")."""
        self._receiving = False
        self._halting = False
        frames = asyncio.ensure_future(self._frames(ws))
        kick = asyncio.ensure_future(self._kick.wait())
        try:
            while True:
                now = time.monotonic()
                if now - opened >= self.s.max_age_s:
                    self.renewals += 1
                    log.info("%s stream: renewing the connection before Binance's 24 h cut", self.name)
                    return
                quiet = now - self.last_frame
                # Silent means nothing came while the reader waited for it: a frame still being
                # handled (a slow listener) is not silence; it is looked at again shortly.
                if self._receiving and quiet >= self.s.silence_s:
                    self.watchdog_fires += 1
                    raise StreamSilent(f"no frame for {self.s.silence_s:.1f} s")
                wait = min(self.s.silence_s - quiet, self.s.max_age_s - (now - opened))
                done, _ = await asyncio.wait(
                    (frames, kick), timeout=max(wait, BUSY_POLL_S), return_when=asyncio.FIRST_COMPLETED
                )
                if frames in done:
                    frames.result()  # the connection's end: raises why
                    raise ConnectionError("reader ended")
                if kick in done:
                    return
        except asyncio.CancelledError:
            frames.cancel()  # stop(): the frame being handled is cancelled with us, as before
            raise
        finally:
            kick.cancel()
            await self._halt(frames)

    async def _frames(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Every frame of the connection in arrival order, until it ends (raises) or ``_halt``."""
        while not self._halting:
            self._receiving = True
            try:
                msg = await ws.receive()  # no yield when a frame is already buffered
            finally:
                self._receiving = False
            if msg.type is aiohttp.WSMsgType.TEXT or not self.s.data_only:
                self.last_frame = time.monotonic()
                self.outage_since = None
            if msg.type is aiohttp.WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                await self._on_frame(json.loads(msg.data))
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                raise ConnectionError(f"closed by the server (code {ws.close_code})")
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise ConnectionError(f"connection error ({_one_line(ws.exception())})")

    async def _halt(self, frames: asyncio.Future[None]) -> None:
        """End the reader: at once while it waits for a frame; after the frame it is handling
        otherwise (a frame taken from the socket is always handled to its end, as when the
        reader ran inline). Our own cancellation meanwhile cancels it and goes on."""
        if not frames.done():
            if self._receiving:
                frames.cancel()
            else:
                self._halting = True
            try:
                await asyncio.wait((frames,))
            except asyncio.CancelledError:
                frames.cancel()
                raise
        if not frames.cancelled():
            frames.exception()  # retrieved (``_read`` raised it already when it ended the reader)


class StreamSilent(Exception):
    """The watchdog found the socket connected but silent."""


def _one_line(exc: object) -> str:
    """An error as one log/alert line; a refused upgrade quotes the URL: its listen key is masked."""
    return hide_listen_keys(" ".join(f"{type(exc).__name__}: {exc}".split()))
