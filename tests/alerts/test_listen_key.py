"""The user stream's listen key is a credential (whoever holds it reads the account's orders and
fills): it must not reach an alert or a log line. A refused WebSocket upgrade (Binance answers
an unknown key, maintenance or a ban with an HTTP status) raises aiohttp's handshake error, whose
text quotes the full URL, ``...?listenKey=<key>``; that text is the socket's ``last_error``,
logged at each attempt and forwarded into the stream-outage alert."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from perpbot.alerts.discord import DiscordNotifier
from perpbot.alerts.streams import StreamWatch
from perpbot.exchange.binance.ws import ResilientSocket, StreamSettings
from tests.alerts.webhook import WebhookServer
from tests.runtime.simproc import Simulator

KEY = "pqXf5w2sLkT8vB3nR6yH1mJ4cZ7aD0eG9iK2oU5tW8xQ1rS4uV7yA0bC3dF6gH9j"  # Binance's shape: 64


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = Simulator(["BTCUSDT", "ETHUSDT"], 1)
    yield s
    s.stop()


@pytest.fixture
async def hook() -> AsyncIterator[WebhookServer]:
    server = await WebhookServer().start()
    yield server
    await server.stop()


async def test_a_refused_user_stream_upgrade_leaks_its_listen_key_nowhere(
    sim: Simulator, hook: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    notifier = DiscordNotifier(hook.url, tag="[TESTNET]")

    async def url() -> str:  # a key the venue does not know: the upgrade is refused (HTTP 400)
        return f"{sim.ws}/private/ws?listenKey={KEY}"

    async def nothing(*_a: object) -> None:
        return None

    sock = ResilientSocket(
        "user", url, nothing, nothing, StreamSettings(silence_s=0.2, backoff_s=0.05, backoff_max_s=0.1)
    )
    watch = StreamWatch(notifier.notify_nowait)
    watch.add("user", sock)
    sock.start()
    try:
        for _ in range(500):
            watch.check()
            if watch.outages("user"):
                break
            await asyncio.sleep(0.01)
    finally:
        await sock.stop()
    await notifier.aclose()
    assert watch.outages("user") == 1
    (content,) = hook.contents()
    assert "user stream down" in content and "400" in content  # the cause is still told
    assert "listenKey=***" in content
    assert KEY not in content
    assert "400" in caplog.text and KEY not in caplog.text
