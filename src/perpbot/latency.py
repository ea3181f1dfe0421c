"""Decision-latency probe for ``bench/bench_runtime.py``: stamps taken in the product code path.

Why a module-level switch and not a callback per component: the stamps sit in three places of
the hot path (the market stream's closed kline, the runtime's candle job, the REST client right
before it sends an order). When no probe is installed (always, outside the benchmark) each place
costs one global read and a ``None`` check.

Stamps (``time.monotonic``, the clock the WebSocket reader already reads when a frame arrives):
- ``kline``: the closed kline's frame was received (the socket's ``last_frame`` of that frame,
  taken before JSON decoding);
- ``handled``: the symbol's worker finished ``on_candle`` for it (decision made, orders placed);
- ``entry``: the entry order's HTTP request is handed to aiohttp (after ccxt signed it).
An entry belongs to the candle its symbol's worker is handling at that moment (one job at a time
per symbol), so no id matching across clocks is needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


@dataclass(slots=True)
class LatencyProbe:
    klines: dict[tuple[str, int], float] = field(default_factory=dict)
    handled: dict[tuple[str, int], float] = field(default_factory=dict)
    entries: list[tuple[str, int, float]] = field(default_factory=list)  # symbol, open, seconds
    # A reverse (SPEC §8.6): the close order's stamp; its re-entry is in ``entries`` as well.
    closes: dict[tuple[str, int], float] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)  # symbol → candle open being handled

    def kline(self, symbol: str, open_ms: int, received: float) -> None:
        self.klines.setdefault((symbol, open_ms), received)

    def begin(self, symbol: str, open_ms: int) -> None:
        self.current[symbol] = open_ms

    def end(self, symbol: str, open_ms: int) -> None:
        self.handled[(symbol, open_ms)] = time.monotonic()

    def request(self, url: str, method: str, body: object) -> None:
        """Called for every REST request right before it is sent; keeps entry orders (and the
        close order of a reverse, so that re-entries can be told from entries made flat)."""
        if method != "POST" or "/fapi/v1/order" not in url:
            return
        now = time.monotonic()
        query = urlsplit(url).query
        if isinstance(body, str | bytes) and body:
            query += "&" + (body.decode() if isinstance(body, bytes) else body)
        cid = parse_qs(query).get("newClientOrderId", [""])[0]
        parts = cid.split("-")
        intent = parts[3].rstrip("0123456789") if len(parts) == 4 else ""
        if intent not in ("entry", "close"):  # entry, entry2, …
            return
        sym = next((s for s in self.current if s.lower() == parts[1].lower()), None)
        if sym is None:
            return
        open_ms = self.current[sym]
        received = self.klines.get((sym, open_ms))
        if received is None:
            return
        if intent == "close":
            self.closes.setdefault((sym, open_ms), now - received)
        else:
            self.entries.append((sym, open_ms, now - received))


PROBE: LatencyProbe | None = None
