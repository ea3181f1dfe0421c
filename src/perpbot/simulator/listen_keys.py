"""The user-data-stream key: one active key per account, 60 minutes of validity, extendable.

Binance semantics: ``POST`` returns the active key (extending it) or creates one; ``PUT`` extends
the active key or answers -1125; ``DELETE`` closes it and its stream. A key that lapses (or an
injected expiry) only sends ``listenKeyExpired``: Binance leaves that socket open and silent.
Validity is wall-clock time. Keys are
derived from the API key and a counter (deterministic, unguessable without the API key).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from perpbot.simulator.errors import BinanceError


@dataclass
class ListenKeys:
    api_key: str
    clock_ms: Callable[[], int]
    validity_ms: int = 3_600_000
    key: str | None = None
    expires_ms: int = 0
    issued: int = 0
    on_expire: list[Callable[[str, bool], None]] = field(default_factory=list)

    def active(self) -> str | None:
        """The live key, after expiring it when its time is up (listeners are told)."""
        if self.key is not None and self.clock_ms() >= self.expires_ms:
            self.expire()
        return self.key

    def is_valid(self, key: str) -> bool:
        return key is not None and self.active() == key

    def create(self) -> str:
        key = self.active()
        if key is None:
            self.issued += 1
            key = hashlib.sha256(f"{self.api_key}:{self.issued}".encode()).hexdigest()
            self.key = key
        self.expires_ms = self.clock_ms() + self.validity_ms
        return key

    def extend(self) -> str:
        key = self.active()
        if key is None:
            raise BinanceError(-1125, "This listenKey does not exist.")
        self.expires_ms = self.clock_ms() + self.validity_ms
        return key

    def expire(self, close: bool = False) -> None:
        """Kill the active key now (validity over, an injected fault, or DELETE: ``close``, the
        one case where Binance also closes the key's sockets)."""
        key, self.key = self.key, None
        if key is not None:
            for cb in tuple(self.on_expire):
                cb(key, close)
