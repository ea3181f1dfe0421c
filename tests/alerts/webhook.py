"""A Discord-like webhook on a real loopback socket: records every post, answers from a script.

Each request takes the next scripted ``Reply`` (then the default: 204). A reply may be slow
(``delay_s``), may hang until ``release`` is set, may be a 429 carrying ``retry_after`` in the
JSON body and/or the ``Retry-After`` header, a 5xx, or a 4xx echoing what it was sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "wh-T0KEN-abcdef0123456789"
WEBHOOK_PATH = f"/api/webhooks/123456/{TOKEN}"


@dataclass(slots=True)
class Reply:
    status: int = 204
    delay_s: float = 0.0
    hang: bool = False  # wait for ``WebhookServer.release``
    retry_after_body: float | None = None
    retry_after_header: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    echo: bool = False  # 4xx body quotes the request (to test that logs are redacted)


@dataclass(slots=True)
class Post:
    at: float  # time.monotonic() on arrival
    payload: dict[str, Any]
    path: str


class WebhookServer:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.posts: list[Post] = []
        self.answered: list[float] = []
        self.release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    async def start(self) -> WebhookServer:
        app = web.Application()
        app.router.add_post(WEBHOOK_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def contents(self) -> list[str]:
        return [p.payload["content"] for p in self.posts]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        payload = await request.json()
        self.posts.append(Post(time.monotonic(), payload, request.path))
        reply = self.script.pop(0) if self.script else Reply()
        if reply.hang:
            await self.release.wait()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        headers = dict(reply.headers)
        body: dict[str, Any] | None = None
        if reply.status == 429:
            body = {"message": "You are being rate limited.", "global": False}
            if reply.retry_after_body is not None:
                body["retry_after"] = reply.retry_after_body
            if reply.retry_after_header is not None:
                headers["Retry-After"] = reply.retry_after_header
        elif reply.echo:
            body = {"message": f"bad request to {request.url}", "content": payload.get("content")}
        self.answered.append(time.monotonic())
        if body is None:
            return web.Response(status=reply.status, headers=headers)
        return web.Response(
            status=reply.status, headers=headers, text=json.dumps(body), content_type="application/json"
        )
