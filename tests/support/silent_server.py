"""A loopback TCP server that accepts every connection and never answers: a venue whose
WebSocket endpoint takes the socket but never completes the upgrade (the handshake hangs)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[int, list[int]]]:
    """``(port, accepted)``: ``accepted`` grows by one per connection taken (and left unanswered)."""
    accepted: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):  # the upgrade request is read, never answered
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
