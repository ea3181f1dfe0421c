"""Notifier: SPEC §11 message content, non-blocking Discord delivery, errors contained, no secrets."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from perpbot.domain.types import CloseReason, Side
from perpbot.engine.notifier import (
    DiscordNotifier,
    RecordingNotifier,
    close_message,
    emergency_message,
    entry_message,
    kill_switch_message,
    recovered_message,
)

URL = "https://discord.com/api/webhooks/123/SECRET-TOKEN"


class FakeSession:
    def __init__(self, status: int = 204, exc: Exception | None = None) -> None:
        self.status = status
        self.exc = exc
        self.gate = asyncio.Event()
        self.gate.set()
        self.posts: list[tuple[str, Any, Any]] = []
        self.closed = False

    def post(self, url: str, *, json: Any, timeout: Any) -> Any:
        self.posts.append((url, json, timeout))
        session = self

        class _Ctx:
            async def __aenter__(self) -> Any:
                await session.gate.wait()
                if session.exc is not None:
                    raise session.exc
                return self

            async def __aexit__(self, *exc: object) -> None:
                return None

            @property
            def status(self) -> int:
                return session.status

        return _Ctx()

    async def close(self) -> None:
        self.closed = True


def test_entry_message_format() -> None:
    text = entry_message(
        "XRPUSDT",
        Side.LONG,
        entry_price=0.51234,
        qty=44.0,
        leverage=10,
        sl=0.5,
        tp=0.53,
        rsi=28.126,
        macd_hist=0.0001234,
        atr=float("nan"),
    )
    assert text.startswith("**[XRPUSDT] LONG entry**")
    for part in ("`0.5123`", "`44`", "`10x`", "`0.5000`", "`0.5300`", "`28.13`", "`0.000123`", "`0.000000`"):
        assert part in text


@pytest.mark.parametrize(
    ("reason", "emoji"), [(CloseReason.TP, "✅"), (CloseReason.SL, "❌"), (CloseReason.SYNC, "🔶")]
)
def test_close_message_format(reason: CloseReason, emoji: str) -> None:
    text = close_message("XRPUSDT", Side.SHORT, reason, exit_price=0.49, estimated=1.0, actual=0.9512)
    assert text.startswith(f"{emoji} **[XRPUSDT] SHORT {reason.value} close**")
    assert "`0.4900`" in text and "`+1.0000 USDT`" in text and "`+0.9512 USDT`" in text
    assert "`-0.0488 USDT`" in text


def test_other_messages() -> None:
    assert recovered_message("XRPUSDT", Side.LONG, 0.5, 100.0, ["SL"]).startswith("ℹ️")
    assert "RESET_KILL_SWITCH_XRPUSDT=true" in kill_switch_message("XRPUSDT", "fast")
    assert "MANUAL ACTION NEEDED" in emergency_message("XRPUSDT", Side.LONG, "x", success=False)


async def test_recording_notifier() -> None:
    n = RecordingNotifier()
    await n.notify("info", "a")
    await n.notify("close", "b")
    assert n.kinds() == ["info", "close"] and n.texts("close") == ["b"]


async def test_discord_posts_without_blocking_and_with_prefix() -> None:
    session = FakeSession()
    session.gate.clear()  # the webhook hangs
    n = DiscordNotifier(URL, lambda: session, testnet=True)
    await asyncio.wait_for(n.notify("info", "hello"), 0.5)  # returns at once regardless
    await asyncio.sleep(0)
    assert n.sent == 0
    session.gate.set()
    await n.aclose()
    assert n.sent == 1 and session.closed
    url, payload, timeout = session.posts[0]
    assert url == URL and payload == {"content": "[TESTNET] hello"}
    assert timeout.total == 10.0


async def test_discord_errors_are_logged_without_the_url(caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession(exc=RuntimeError(f"cannot connect to {URL}"))
    n = DiscordNotifier(URL, lambda: session)
    with caplog.at_level(logging.WARNING):
        await n.notify("close", "x")
        await n.aclose()
    assert n.failed == 1
    assert "SECRET-TOKEN" not in caplog.text and "<webhook>" in caplog.text
    assert "SECRET-TOKEN" not in repr(n)


async def test_discord_http_error_counted() -> None:
    session = FakeSession(status=429)
    n = DiscordNotifier(URL, lambda: session)
    await n.notify("close", "x" * 5000)
    await n.aclose()
    assert n.failed == 1 and n.sent == 0
    assert len(session.posts[0][1]["content"]) == 2000  # Discord's limit


async def test_discord_disabled_without_url() -> None:
    calls: list[int] = []
    n = DiscordNotifier("", lambda: calls.append(1))
    await n.notify("info", "x")
    await n.aclose()
    assert not n.enabled and calls == []
