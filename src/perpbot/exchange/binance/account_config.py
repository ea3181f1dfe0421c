"""The venue's last word on a symbol's leverage and margin type, so an entry need not set them
again (docs/ARCHITECTURE.md, "Decision latency").

Why: SPEC §8.4 step 6 sets the leverage before every entry and §13 row 19 sets ISOLATED before
every entry; done blindly that is two round trips between the signal and the order. The bot reads
the live position right before each entry (SPEC §8.3 step 7), and that ``positionRisk`` row (v2)
carries the symbol's current ``leverage`` and ``marginType``. When the row read moments ago says
the venue is already at the wanted leverage and ISOLATED, the requests are skipped: the venue's
state at the order is the same as after setting them. Fail closed: anything unknown, older than
``ttl_s``, different, or forgotten (an ``ACCOUNT_CONFIG_UPDATE``, a user-stream reconnect) means
the request is sent, exactly as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CONFIG_TTL_S = 30.0


class AccountConfig:
    """Per symbol: (leverage, margin type, when the venue said so)."""

    def __init__(self, *, ttl_s: float = CONFIG_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._leverage: dict[str, tuple[int, float]] = {}
        self._isolated: dict[str, tuple[bool, float]] = {}
        self.skipped = 0  # requests not sent because the venue was already set (diagnostics)

    def saw(self, symbol: str, leverage: object = None, margin_type: object = None) -> None:
        """A ``positionRisk`` row (or our own accepted request) told us the venue's setting."""
        now = self._clock()
        if isinstance(leverage, int | str) and str(leverage).isdigit():
            self._leverage[symbol] = (int(leverage), now)
        if isinstance(margin_type, str) and margin_type:
            self._isolated[symbol] = (margin_type.lower() == "isolated", now)

    def forget(self, symbol: str | None = None) -> None:
        """The venue may have changed (a config event, a reconnect): ask again next time."""
        if symbol is None:
            self._leverage.clear()
            self._isolated.clear()
        else:
            self._leverage.pop(symbol, None)
            self._isolated.pop(symbol, None)

    def leverage_is(self, symbol: str, leverage: int) -> bool:
        """True only when a fresh answer says the venue already uses ``leverage``."""
        got = self._leverage.get(symbol)
        return got is not None and got[0] == int(leverage) and self._fresh(got[1])

    def isolated(self, symbol: str) -> bool:
        """True only when a fresh answer says the venue already uses ISOLATED margin."""
        got = self._isolated.get(symbol)
        return got is not None and got[0] and self._fresh(got[1])

    def _fresh(self, at: float) -> bool:
        return self._clock() - at <= self.ttl_s
