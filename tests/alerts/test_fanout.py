"""The fan-out notifier: every target gets every alert, in order, on both paths; a target that
fails costs the others nothing; closing closes the targets that can be closed."""

from __future__ import annotations

import pytest

from perpbot.alerts.fanout import FanOutNotifier
from perpbot.engine.notifier import RecordingNotifier


class _Broken:
    """A target whose every call raises (a notifier bug must not silence the others)."""

    closed = False

    async def notify(self, kind: str, text: str) -> None:
        raise RuntimeError("boom")

    def notify_nowait(self, kind: str, text: str) -> bool:
        raise RuntimeError("boom")

    async def aclose(self) -> None:
        self.closed = True
        raise RuntimeError("boom at close")


async def test_every_target_gets_every_alert_and_a_broken_one_costs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, last, broken = RecordingNotifier(), RecordingNotifier(), _Broken()
    fan = FanOutNotifier(first, broken, last)
    await fan.notify("entry", "one")
    assert fan.notify_nowait("daily_loss", "two") is False  # one target did not take it
    assert first.messages == last.messages == [("entry", "one"), ("daily_loss", "two")]
    assert sum("alert target _Broken failed" in r.getMessage() for r in caplog.records) == 2
    await fan.aclose()
    assert broken.closed
    assert FanOutNotifier(first, last).notify_nowait("info", "three") is True
