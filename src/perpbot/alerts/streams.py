"""Stream outage alerts: one when a stream has delivered nothing for longer than its watchdog,
one when it delivers again (issue 10 §3).

Why a poller and not a callback in the socket: an outage is a *duration*. A dropped connection
that the socket re-opens in 200 ms is not worth a message; one that stays down past the
watchdog period is. And a deaf stream cycles (watchdog → reconnect → still deaf → watchdog …),
so the outage is tracked by the socket's ``outage_since`` (cleared only by a frame that resets
its watchdog), not by connects: one outage, however many reconnects, is one alert.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perpbot.engine.notifier import stream_outage_message, stream_restored_message

AlertNowait = Callable[[str, str], Any]


@dataclass(slots=True)
class _Watched:
    name: str
    socket: Any  # ResilientSocket: ``outage_since``, ``last_error``, ``s.silence_s``
    open_since: float | None = None  # start of the alerted outage (None: no open alert)
    outages: int = 0


class StreamWatch:
    """Polls sockets every ``check()``; ``alert(kind, text)`` must not block."""

    def __init__(self, alert: AlertNowait, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._alert = alert
        self._now = monotonic
        self._watched: list[_Watched] = []

    def add(self, name: str, socket: Any) -> None:
        self._watched.append(_Watched(name, socket))

    def outages(self, name: str) -> int:
        """How many outages of ``name`` were alerted (tests, status)."""
        return sum(w.outages for w in self._watched if w.name == name)

    def check(self) -> None:
        now = self._now()
        for w in self._watched:
            since = w.socket.outage_since
            if w.open_since is not None:
                if since is None:  # delivering again
                    self._alert("stream_restored", stream_restored_message(w.name, now - w.open_since))
                    w.open_since = None
                continue
            watchdog = float(w.socket.s.silence_s)
            if since is not None and now - since >= watchdog:
                w.open_since = since
                w.outages += 1
                self._alert(
                    "stream_outage",
                    stream_outage_message(w.name, now - since, watchdog, w.socket.last_error),
                )

    async def run(self, tick_s: float) -> None:
        while True:
            await asyncio.sleep(tick_s)
            self.check()
