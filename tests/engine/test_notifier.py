"""Notifier: SPEC §11 message content and the in-memory recorder (Discord delivery: tests/alerts)."""

from __future__ import annotations

import pytest

from perpbot.domain.types import CloseReason, Side
from perpbot.engine.notifier import (
    RecordingNotifier,
    bot_restart_message,
    close_message,
    daily_loss_message,
    emergency_message,
    entry_message,
    kill_switch_message,
    recovered_message,
    stream_outage_message,
    stream_restored_message,
    weight_ban_message,
)


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


async def test_recording_notifier_sync_path() -> None:
    n = RecordingNotifier()
    assert n.notify_nowait("daily_loss", "a")
    assert n.messages == [("daily_loss", "a")]


def test_runtime_alert_messages() -> None:
    text = daily_loss_message(-52.5, 1000.0, 0.05)
    assert text.startswith("🛑 **Daily loss limit reached**")
    assert "`-52.5000 USDT`" in text and "`-5.25 %`" in text and "`5 %`" in text and "00:00 UTC" in text
    assert weight_ban_message("HTTP 418").startswith("⛔ **[BINANCE] request weight**: HTTP 418")
    out = stream_outage_message("market", 95.4, 90.0, "StreamSilent: no frame for 90.0 s")
    assert (
        "market stream down" in out and "`95 s`" in out and "watchdog 90 s" in out and "StreamSilent" in out
    )
    assert stream_restored_message("user", 120.0).startswith("ℹ️ **user stream restored** after `120 s`")
    assert bot_restart_message("XRPUSDT", "RuntimeError: x", 2.0) == (
        "⚠️ **[XRPUSDT]** bot task died (RuntimeError: x); restarting in 2.0 s"
    )
