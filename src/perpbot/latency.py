"""Decision-latency probe for ``bench/bench_runtime.py``: stamps taken in the product code path.

Why a module-level switch and not a callback per component: the stamps sit in a few places of
the hot path (the market stream's closed kline, the runtime's candle job, the REST client around
every request). When no probe is installed (always, outside the benchmark) each place costs one
global read and a ``None`` check.

Stamps (``time.monotonic``, the clock the WebSocket reader already reads when a frame arrives):
- ``kline``: the closed kline's frame was received (the socket's ``last_frame`` of that frame,
  taken before JSON decoding), for every streamed symbol (BTC/ETH too: the inputs);
- ``stage``: a step of the candle job (``runtime/candle_job.py``) finished, by name; the job
  stamps ``inputs`` itself when the decision had to wait for the OI/funding answers as well;
- ``request`` / ``answer``: a REST request handed to aiohttp (after ccxt signed it) and its
  answer back, by endpoint (``REST_NAMES``), per symbol (the request's ``symbol`` parameter);
  the balance read, which names no symbol, in ``balances``;
- ``handled``: the symbol's worker finished ``on_candle`` for it (decision made, orders placed);
- ``entries``: the entry order's HTTP request is handed to aiohttp;
- ``executions``: a user-stream execution (``ORDER_TRADE_UPDATE``, ``x=TRADE``) handed to the
  bots, by symbol, from the frame's dispatch to its end (the bot's booking, the cancel of the
  other protective order): another position's exit handled inside a decision's window takes
  the loop from that decision;
- ``cpu``: ``time.thread_time`` of the event loop's thread at the kline's receipt and at each
  entry order: the CPU the bot itself spent in between (every symbol's work), which neither
  waiting for the venue's answers nor being preempted by other processes adds to. On a machine
  shared with the simulator and other work this is the figure that does not drift with the load.
An entry belongs to the candle its symbol's worker is handling at that moment (one job at a time
per symbol), so no id matching across clocks is needed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

_SYMBOL = re.compile(r"(?:^|&)symbol=([^&]*)")
_CLIENT_ID = re.compile(r"(?:^|&)newClientOrderId=([^&]*)")  # ours: letters, digits and '-'

# REST endpoints of the decision path, by the last part of their URL path.
REST_NAMES = {
    "openInterest": "oi",
    "premiumIndex": "funding",
    "positionRisk": "position",
    "balance": "balance",
    "order": "order",
}


@dataclass(slots=True)
class LatencyProbe:
    klines: dict[tuple[str, int], float] = field(default_factory=dict)
    handled: dict[tuple[str, int], float] = field(default_factory=dict)
    entries: list[tuple[str, int, float, float]] = field(default_factory=list)  # sym, open, at, cpu
    kline_cpu: dict[tuple[str, int], float] = field(default_factory=dict)
    # A reverse (SPEC §8.6): the close order's stamp; its re-entry is in ``entries`` as well.
    closes: dict[tuple[str, int], float] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)  # symbol → candle open being handled
    # (symbol, open) → step name → first stamp: the job's steps and its REST reads ("oi>" sent,
    # "oi<" answered, …).
    stages: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    balances: list[tuple[str, float]] = field(default_factory=list)  # ("balance>"|"balance<", at)
    executions: list[tuple[str, float, float]] = field(default_factory=list)  # symbol, start, end

    def kline(self, symbol: str, open_ms: int, received: float) -> None:
        self.klines.setdefault((symbol, open_ms), received)
        self.kline_cpu.setdefault((symbol, open_ms), time.thread_time())

    def execution(self, symbol: str, started: float) -> None:
        self.executions.append((symbol, started, time.monotonic()))

    def begin(self, symbol: str, open_ms: int) -> None:
        self.current[symbol] = open_ms

    def stage(self, symbol: str, open_ms: int, name: str, at: float | None = None) -> None:
        steps = self.stages.setdefault((symbol, open_ms), {})
        steps.setdefault(name, time.monotonic() if at is None else at)

    def end(self, symbol: str, open_ms: int) -> None:
        self.handled[(symbol, open_ms)] = time.monotonic()

    def request(self, url: str, method: str, body: object) -> None:
        """Called for every REST request right before it is sent."""
        self._rest(url, method, body, ">")

    def answer(self, url: str, method: str, body: object) -> None:
        """Called for every REST request when its answer (or error) came back."""
        self._rest(url, method, body, "<")

    def _rest(self, url: str, method: str, body: object, way: str) -> None:
        # Two regular expressions rather than ``urlsplit`` + ``parse_qs``: this runs twice per
        # request inside the very windows it measures (~6 % of their CPU with the parsers).
        now = time.monotonic()
        path, _, query = url.partition("?")
        name = REST_NAMES.get(path.rsplit("/", 1)[-1])
        if name is None:
            return
        if name == "balance":
            self.balances.append((name + way, now))
            return
        if isinstance(body, str | bytes) and body:
            query += "&" + (body.decode() if isinstance(body, bytes) else body)
        found = _SYMBOL.search(query)
        sym = found.group(1) if found is not None else ""
        if sym not in self.current:
            return
        open_ms = self.current[sym]
        if name != "order" or method != "POST":
            self.stage(sym, open_ms, name + way, now)
            return
        if way == "<":
            return
        # Entry orders (and the close order of a reverse, so that re-entries can be told from
        # entries made flat), by the intent in the client id.
        found = _CLIENT_ID.search(query)
        cid = (found.group(1) if found is not None else "").split("-")
        intent = cid[3].rstrip("0123456789") if len(cid) == 4 else ""
        if intent == "close":
            self.closes.setdefault((sym, open_ms), now)
        elif intent == "entry":  # entry, entry2, …
            self.entries.append((sym, open_ms, now, time.thread_time()))


PROBE: LatencyProbe | None = None
