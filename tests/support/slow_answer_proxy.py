"""A loopback HTTP proxy in front of ``perpbot simulate``'s REST API that can hold one answer
*after* the venue served it: the client then acts on a state the venue has already left (a
congested network or a slow client, not something the simulator's ``latency`` fault can give:
that one waits *before* serving)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

_HOP = {"host", "content-length", "transfer-encoding", "content-encoding", "connection", "accept-encoding"}


class SlowAnswerProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.hold_path: str | None = None  # the next request to this path is held once served
        self.hold_symbol: str | None = None  # ... and of this symbol (None: any)
        self.held = asyncio.Event()  # set when an answer is being held
        self.release = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold_next(self, path: str, symbol: str | None = None) -> None:
        self.hold_path, self.hold_symbol = path, symbol
        self.held.clear()
        self.release.clear()

    async def _handle(self, request: web.Request) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body or None
        ) as r:
            payload = await r.read()
            status = r.status
            out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP}
        wanted = self.hold_symbol is None or request.query.get("symbol") == self.hold_symbol
        if self.hold_path is not None and request.path == self.hold_path and wanted:
            self.hold_path = None
            self.held.set()
            await self.release.wait()
        return web.Response(body=payload, status=status, headers=out)


@asynccontextmanager
async def slow_answer_proxy(upstream: str) -> AsyncIterator[SlowAnswerProxy]:
    proxy = SlowAnswerProxy(upstream)
    proxy._session = aiohttp.ClientSession()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    proxy.port = runner.addresses[0][1]
    try:
        yield proxy
    finally:
        proxy.release.set()
        await runner.cleanup()
        await proxy._session.close()
