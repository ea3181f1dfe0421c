"""StreamWatch: the outage alert rule on a socket's state (``outage_since``), time injected."""

from __future__ import annotations

from dataclasses import dataclass, field

from perpbot.alerts.streams import StreamWatch
from perpbot.engine.notifier import RecordingNotifier
from perpbot.exchange.binance.ws import StreamSettings


@dataclass
class SocketState:
    """The three attributes of ``ResilientSocket`` the watch reads."""

    s: StreamSettings = field(default_factory=lambda: StreamSettings(silence_s=90.0))
    outage_since: float | None = None
    last_error: str = ""


def _watch() -> tuple[StreamWatch, SocketState, RecordingNotifier, list[float]]:
    now = [1000.0]
    alerts = RecordingNotifier()
    w = StreamWatch(alerts.notify_nowait, monotonic=lambda: now[0])
    sock = SocketState()
    w.add("market", sock)
    return w, sock, alerts, now


def test_an_outage_shorter_than_the_watchdog_is_not_alerted() -> None:
    w, sock, alerts, now = _watch()
    sock.outage_since = now[0]
    now[0] += 89.0
    w.check()
    sock.outage_since = None
    now[0] += 1.0
    w.check()
    assert alerts.messages == []


def test_a_long_outage_is_alerted_once_and_its_end_once() -> None:
    w, sock, alerts, now = _watch()
    sock.outage_since, sock.last_error = now[0], "ConnectionError: closed by the server (code 1006)"
    for _ in range(30):  # polled every 10 s for 300 s
        now[0] += 10.0
        w.check()
    sock.outage_since = None
    now[0] += 10.0
    w.check()
    w.check()
    assert alerts.kinds() == ["stream_outage", "stream_restored"]
    down, up = alerts.texts()
    assert "`90 s`" in down and "code 1006" in down
    assert "after `310 s`" in up
    assert w.outages("market") == 1


def test_a_second_outage_is_a_second_alert() -> None:
    w, sock, alerts, now = _watch()
    for _ in range(2):
        sock.outage_since = now[0]
        now[0] += 100.0
        w.check()
        sock.outage_since = None
        w.check()
    assert alerts.kinds() == ["stream_outage", "stream_restored"] * 2
