"""Alerts of the live runtime, end to end: the runtime trades through the Binance adapter against
a ``perpbot simulate`` child (real HTTP and WebSocket), its alerts go through the Discord
notifier to a loopback webhook. Faults are injected into the simulator: a market stream that
drops and comes back at once (no alert), one that goes silent for longer than its watchdog (one
outage alert, one recovery alert, however many reconnects), and a 429 (-1003) burst (one weight
alert). Every post carries the run's mode tag and none carries the API key, the secret or the
webhook token."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from perpbot.alerts.discord import DeliveryPolicy
from perpbot.alerts.factory import build_notifier
from perpbot.config import load_config
from perpbot.exchange.binance.ws import StreamSettings
from perpbot.runtime.app import Runtime
from tests.alerts.webhook import TOKEN, WebhookServer
from tests.runtime.simproc import Simulator
from tests.support.runtime import loopback_env, loopback_options

TRADED = ["XRPUSDT", "TRXUSDT"]
WATCHDOG_S = 1.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator([*TRADED, "BTCUSDT", "ETHUSDT"], 3)
    yield s
    s.stop()


@pytest.fixture
async def hook() -> AsyncIterator[WebhookServer]:
    s = await WebhookServer().start()
    yield s
    await s.stop()


def _inject(sim: Simulator, faults: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(sim.http + "/sim/faults", data=json.dumps(faults).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def _runtime(sim: Simulator, hook: WebhookServer, journal: Path) -> Runtime:
    cfg = load_config(loopback_env(sim, tuple(TRADED), DISCORD_WEBHOOK_URL=hook.url), env_file=None)
    opts = loopback_options(
        journal,
        stream=StreamSettings(silence_s=WATCHDOG_S, backoff_s=0.05, backoff_max_s=0.2),
        user_stream=StreamSettings(silence_s=600.0, backoff_s=0.05, backoff_max_s=0.5, data_only=False),
    )
    notifier = build_notifier(cfg, cfg.binance_env, DeliveryPolicy(backoff_s=0.05, drain_s=10.0))
    return Runtime(cfg, opts, out=lambda _line: None, notifier=notifier)  # fresh budget: tests/conftest.py


async def _advance_for(sim: Simulator, seconds: float, pace_s: float = 0.15) -> None:
    """The venue keeps trading: one bar every ``pace_s`` (klines flow on the market stream)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.to_thread(sim.advance, 1)
        await asyncio.sleep(pace_s)


def _posts(hook: WebhookServer, needle: str) -> list[str]:
    return [c for c in hook.contents() if needle in c]


async def test_stream_outage_and_weight_alerts_reach_the_webhook_once_each(
    sim: Simulator, hook: WebhookServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rt = _runtime(sim, hook, tmp_path / "journal.sqlite3")
    await rt.start()
    try:
        await _advance_for(sim, 2.0)
        assert rt.streams.outages("market") == 0  # klines flow: no outage
        # A dropped connection that comes back within the watchdog is not worth a message.
        connects = rt.feed.socket.connects
        _inject(sim, [{"kind": "drop_connection", "stream": "market"}])
        await _advance_for(sim, 1.5)
        assert rt.feed.socket.connects > connects and rt.streams.outages("market") == 0

        # The market stream stays connected and answers pings but sends no data for 3.5 s:
        # the watchdog (1 s) reconnects it again and again; the operator hears of it once.
        _inject(sim, [{"kind": "silent_stream", "stream": "market", "seconds": 3.5}])
        await _advance_for(sim, 3.5)
        assert rt.feed.socket.watchdog_fires >= 2
        await _advance_for(sim, 1.5)  # data flows again
        assert rt.streams.outages("market") == 1 and rt.streams.outages("user") == 0

        # A 429 (-1003) burst on the open-interest endpoint (read on every candle).
        _inject(sim, [{"kind": "rate_limit_burst", "endpoint": "/fapi/v1/openInterest", "count": 1}])
        await _advance_for(sim, 2.5)
        assert all(rt.candles_handled[s] > 20 for s in TRADED)
    finally:
        await rt.stop()  # drains the notifier (bounded)

    posts = hook.contents()
    down = _posts(hook, "market stream down")
    restored = _posts(hook, "market stream restored")
    weight = _posts(hook, "request weight")
    assert len(down) == 1 and len(restored) == 1, posts
    assert "watchdog 1 s" in down[0] and "StreamSilent" in down[0]
    assert len(weight) == 1 and "HTTP 429" in weight[0] and "-1003" in weight[0]
    assert not _posts(hook, "user stream")
    assert posts and all(c.startswith("[TESTNET] ") for c in posts)  # a custom venue's tag
    assert rt.notifier.stats.failed == 0 and rt.notifier.stats.dropped == 0  # type: ignore[attr-defined]
    secrets = (sim.env()["BINANCE_API_KEY"], sim.env()["BINANCE_API_SECRET"], TOKEN, hook.url)
    for text in [*posts, caplog.text]:
        for secret in secrets:
            assert secret not in text
