"""One notifier that hands every alert to several: ``perpbot paper`` keeps its in-memory record
(the paper report and the live view read it) and posts to Discord tagged ``[PAPER]``.

Why a fan-out and not the Discord notifier alone: the record is the paper run's own output (its
report counts the alerts, tests read their text), and must not depend on a webhook being
configured or reachable. Each target is called in turn; none of them waits on the network
(``DiscordNotifier.notify`` only queues), so the fan-out never blocks the loop either. ``aclose``
closes every target that can be closed (the Discord queue's bounded drain).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)


class FanOutNotifier:
    """``notify`` / ``notify_nowait`` / ``aclose`` over ``targets``, in order. A target that fails
    is logged and skipped: one broken target never costs the others an alert."""

    def __init__(self, *targets: Any) -> None:
        self.targets = targets

    async def notify(self, kind: str, text: str) -> None:
        for t in self.targets:
            try:
                await t.notify(kind, text)
            except Exception:
                log.exception("alert target %s failed a %s alert", type(t).__name__, kind)

    def notify_nowait(self, kind: str, text: str) -> bool:
        """The synchronous path (risk manager, weight budget, stream watch); True when every
        target took the alert."""
        ok = True
        for t in self.targets:
            try:
                nowait = getattr(t, "notify_nowait", None)
                if nowait is None:
                    raise TypeError("no notify_nowait")
                ok = bool(nowait(kind, text)) and ok
            except Exception:
                log.exception("alert target %s failed a %s alert", type(t).__name__, kind)
                ok = False
        return ok

    async def aclose(self) -> None:
        for t in self.targets:
            aclose = getattr(t, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
