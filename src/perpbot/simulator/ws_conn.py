"""One WebSocket connection under Binance's connection rules.

Rules (``SimulatorConfig``): the server pings every ``ping_interval_s`` (3 min) and drops a
connection that sent no pong for ``pong_timeout_s`` (10 min); it closes every connection after
``ws_max_age_s`` (24 h); more than ``max_ws_messages_per_s`` (10) incoming messages in a second
close the connection. Outgoing frames go through a queue and one writer task, so the replay loop
never waits for a slow client; a client that falls too far behind is disconnected, as Binance
does with slow consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from perpbot.simulator.config import SimulatorConfig

MAX_QUEUE = 50_000
CLOSE_POLICY = 1008


class StreamConn:
    """A server-side WebSocket plus its subscriptions and its send queue."""

    def __init__(self, request: web.Request, cfg: SimulatorConfig, kind: str, combined: bool) -> None:
        self.request = request
        self.cfg = cfg
        self.kind = kind  # "market" | "private"
        self.combined = combined
        self.ws = web.WebSocketResponse(autoping=False, max_msg_size=64 * 1024)
        self.streams: set[str] = set()
        self.listen_key: str | None = None
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._close_code = 1000
        self._close_reason = b""
        self._last_pong = time.monotonic()
        self._recent: deque[float] = deque(maxlen=cfg.max_ws_messages_per_s)
        self.closed = False

    def push(self, text: str) -> None:
        """Queue a frame (never blocks); a hopelessly slow client is dropped."""
        if self.closed:
            return
        if self._queue.qsize() >= MAX_QUEUE:
            self.closed = True
            self._queue.put_nowait(None)
            return
        self._queue.put_nowait(text)

    def close_soon(self, code: int = 1000, reason: bytes = b"") -> None:
        """Close (with ``code``) once the frames already queued are sent."""
        if not self.closed:
            self.closed = True
            self._close_code, self._close_reason = code, reason
            self._queue.put_nowait(None)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame: the client sees code 1006."""
        self.closed = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def serve(self, on_text: Callable[[StreamConn, str], Awaitable[None]]) -> web.WebSocketResponse:
        await self.ws.prepare(self.request)
        writer = asyncio.ensure_future(self._writer())
        pinger = asyncio.ensure_future(self._pinger())
        try:
            await asyncio.wait_for(self._reader(on_text), timeout=self.cfg.ws_max_age_s)
        except TimeoutError:
            pass  # max age reached: Binance closes the connection
        finally:
            self.close_soon()
            pinger.cancel()
            # Let the writer flush what is queued (and send the close frame), briefly.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(writer, timeout=2.0)
            for t in (writer, pinger):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if not self.ws.closed:
                with contextlib.suppress(Exception):
                    await self.ws.close()
        return self.ws

    async def _reader(self, on_text: Callable[[StreamConn, str], Awaitable[None]]) -> None:
        async for msg in self.ws:
            if msg.type is WSMsgType.TEXT:
                if self._over_rate():
                    self.close_soon(CLOSE_POLICY, b"Too many messages")
                    return
                await on_text(self, msg.data)
            elif msg.type is WSMsgType.PING:
                await self.ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                self._last_pong = time.monotonic()
            elif msg.type is WSMsgType.BINARY:
                await self.send_json(
                    {"error": {"code": 3, "msg": "Invalid JSON: binary frames are not accepted"}, "id": None}
                )
            if self.closed:
                return

    def _over_rate(self) -> bool:
        """True for a message that would be the (limit+1)-th within any one-second window."""
        now = time.monotonic()
        full = len(self._recent) == self._recent.maxlen
        if full and now - self._recent[0] < 1.0:
            return True
        self._recent.append(now)
        return False

    async def _writer(self) -> None:
        q = self._queue
        while True:
            text = await q.get()
            if text is None:
                await self.ws.close(code=self._close_code, message=self._close_reason)
                return
            await self.ws.send_str(text)

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.ping_interval_s)
            if time.monotonic() - self._last_pong > self.cfg.pong_timeout_s:
                self.close_soon(CLOSE_POLICY, b"Pong timeout")
                return
            await self.ws.ping()

    async def send_json(self, obj: Any) -> None:
        self.push(json.dumps(obj, separators=(",", ":")))
