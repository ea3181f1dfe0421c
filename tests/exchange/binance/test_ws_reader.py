"""``ResilientSocket``'s reader against a loopback WebSocket server: frames already in the socket
are handled in one go (a candle close's klines are all read before the jobs they start run); a
frame taken from the socket is handled to its end even when a reconnect is asked meanwhile; a
slow handler is not silence."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from perpbot.exchange.binance.ws import ResilientSocket, StreamSettings

Serve = Callable[[web.WebSocketResponse, int], Awaitable[None]]


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Serve], Awaitable[str]]]:
    """``await server(serve)`` → the URL of a WebSocket server running ``serve(ws, n)`` for its
    n-th connection (0, 1, …); the connection stays open until the client leaves."""
    runners: list[web.AppRunner] = []

    async def start(serve: Serve) -> str:
        count = [0]

        async def handle(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            n, count[0] = count[0], count[0] + 1
            await serve(ws, n)
            async for _ in ws:  # until the client closes
                pass
            return ws

        app = web.Application()
        app.router.add_get("/ws", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"ws://127.0.0.1:{port}/ws"

    yield start
    for r in runners:
        await r.cleanup()


def _socket(url: str, on_frame: Callable[[Any], Awaitable[None]], **settings: Any) -> ResilientSocket:
    async def the_url() -> str:
        return url

    async def on_open() -> None:
        await asyncio.sleep(0.2)  # the server's frames wait in the socket meanwhile

    return ResilientSocket("test", the_url, on_frame, on_open, StreamSettings(backoff_s=0.05, **settings))


async def _run_until(sock: ResilientSocket, cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Run ``sock`` until ``cond()`` holds, then stop it."""
    sock.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not cond():
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.01)
    finally:
        await sock.stop()


async def test_frames_already_in_the_socket_are_handled_before_the_jobs_they_start(server: Any) -> None:
    async def serve(ws: web.WebSocketResponse, n: int) -> None:
        for i in range(5):
            await ws.send_str(json.dumps({"i": i}))

    seen: list[Any] = []

    async def job() -> None:
        seen.append("job")

    async def on_frame(frame: Any) -> None:
        seen.append(frame["i"])
        if frame["i"] == 0:  # the primary's kline starts its candle job
            asyncio.get_running_loop().create_task(job())

    sock = _socket(await server(serve), on_frame)
    await _run_until(sock, lambda: "job" in seen)
    assert seen == [0, 1, 2, 3, 4, "job"]


async def test_a_frame_being_handled_when_a_reconnect_is_asked_is_handled_to_its_end(server: Any) -> None:
    async def serve(ws: web.WebSocketResponse, n: int) -> None:
        await ws.send_str(json.dumps({"conn": n}))

    done: list[int] = []
    sock: ResilientSocket

    async def on_frame(frame: Any) -> None:
        if frame["conn"] == 0:
            sock.reconnect("test")
            await asyncio.sleep(0.2)  # a listener still at work when the reader is told to go
        done.append(frame["conn"])

    sock = _socket(await server(serve), on_frame)
    await _run_until(sock, lambda: done == [0, 1])
    assert sock.connects == 2 and sock.watchdog_fires == 0


async def test_a_slow_handler_is_not_silence(server: Any) -> None:
    async def serve(ws: web.WebSocketResponse, n: int) -> None:
        await ws.send_str(json.dumps({"i": 0}))
        await ws.send_str(json.dumps({"i": 1}))

    seen: list[int] = []

    async def on_frame(frame: Any) -> None:
        if frame["i"] == 0:
            await asyncio.sleep(0.6)  # longer than the silence bound, while frame 1 waits
        seen.append(frame["i"])

    sock = _socket(await server(serve), on_frame, silence_s=0.4)
    await _run_until(sock, lambda: seen == [0, 1])
    assert sock.watchdog_fires == 0 and sock.connects == 1


async def test_silence_still_reconnects(server: Any) -> None:
    async def serve(ws: web.WebSocketResponse, n: int) -> None:
        if n == 0:
            await ws.send_str(json.dumps({"i": 0}))  # then nothing

    sock = _socket(await server(serve), lambda frame: asyncio.sleep(0), silence_s=0.3)
    await _run_until(sock, lambda: sock.connects >= 2)
    assert sock.watchdog_fires >= 1
