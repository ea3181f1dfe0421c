"""Injected failures (``POST /sim/faults``, ``--faults FILE.json``): what a bot must survive.

One JSON shape for both entry points: a list of objects (or ``{"faults": [...]}``), each with a
``kind`` and, depending on the kind, its parameters; ``count`` (how many requests / orders it hits,
default 1) or ``seconds`` (a wall-clock span); optional ``endpoint`` (a path) and ``symbol``.

Kinds: ``http_error`` (``status`` 5xx), ``unknown_after_execution`` (the order *is* executed, the
reply is a 503 "Unknown error"), ``latency`` (``ms``), ``rate_limit_burst`` (429 / -1003),
``time_skew`` (``ms`` added to server time for ``seconds``: -1021 for clients that do not
resync), ``reject_orders`` (``code`` one of -2019, -2022, -4118, -2021, -4045, -1111, -4164, -4116,
-1000, -1008; ``order_kind`` ``order`` | ``algo`` | ``any``), ``drop_connection`` (``stream`` market |
private: TCP abort, the client sees close code 1006), ``silent_stream`` (``stream``; connected,
pings answered, no data; a ``count`` counts withheld events), ``expire_listen_key`` (the key
dies now: ``listenKeyExpired``; the socket stays open and silent, as on Binance), ``adl``
(auto-deleverage now: ``fraction`` of the position of ``symbol``, or of the first symbol holding
one, default 0.5; ``x=CALCULATED``, client id ``adl_autoclose``). ``http_error`` may name a
``method`` (``DELETE``: a failed cancel).

``late_income`` (``income_type`` FUNDING_FEE by default, or COMMISSION, REALIZED_PNL,
INSURANCE_CLEAR, any; ``ms`` of replay time, default one hour): the next ``count`` matching income
rows show in the income history only ``ms`` after their own time (``simulator/late_income.py``).

Late and out-of-order user-stream events (Binance keeps no ordering promise across event types
and a congested stream can deliver late; SPEC §13 asks the bot to survive both):
``late_events`` holds the next ``count`` matching user-stream events back and delivers each one
after ``after`` later events (default 2) went out, or ``ms`` wall milliseconds after it was held
(default 500), whichever comes first; ``swap_events`` is the same with ``after`` fixed at 1: the
matching event and the next one are delivered in swapped order. Both match on ``event``
(``ORDER_TRADE_UPDATE`` | ``ACCOUNT_UPDATE`` | ``ALGO_UPDATE``, default any), ``execution_type``
(``o.x`` of an order update, e.g. ``TRADE``; default any) and ``symbol``. A held event is counted
in ``user_events`` only when it is delivered; one still held when its connection dies is lost
with the connection, as on a real socket. The fault log names what was held (``withheld``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perpbot.errors import ConfigError

REJECT_MESSAGES: dict[int, str] = {
    -2019: "Margin is insufficient.",
    -2022: "ReduceOnly Order is rejected.",
    -4118: "ReduceOnly Order Failed. Please check your existing position and open orders.",
    -2021: "Order would immediately trigger.",  # a stop placed after the price ran through it
    -4045: "Reach max stop order limit.",  # the symbol's algo book is full
    -1111: "Precision is over the maximum defined for this asset.",
    -4164: "Order's notional must be no smaller than 5 (unless you choose reduce only).",
    -4116: "ClientOrderId is duplicated.",
    -1000: "An unknown error occured while processing the request.",
    -1008: "Server is currently overloaded with other requests. Please try again in a few minutes.",
}
KINDS = (
    "http_error",
    "unknown_after_execution",
    "latency",
    "rate_limit_burst",
    "time_skew",
    "reject_orders",
    "drop_connection",
    "silent_stream",
    "expire_listen_key",
    "adl",
    "late_events",
    "swap_events",
    "late_income",
)
EVENT_TYPES = ("ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "ALGO_UPDATE", "any")
REORDER = ("late_events", "swap_events")
INSTANT = ("drop_connection", "expire_listen_key", "adl")
INCOME_TYPES = ("FUNDING_FEE", "COMMISSION", "REALIZED_PNL", "INSURANCE_CLEAR", "any")
LATE_INCOME_MS = 3_600_000  # ``late_income``'s default: an hour of replay time
LATE_INCOME_MAX_MS = 7 * 86_400_000  # Binance's default income window is the last 7 days


@dataclass(slots=True)
class Fault:
    kind: str
    params: dict[str, Any]
    remaining: int | None
    until_ms: int | None
    endpoint: str | None = None
    symbol: str | None = None
    hits: int = 0
    injected_ms: int = 0  # wall clock, when it was registered
    first_hit_ms: int | None = None  # wall clock of its first hit (the chaos audit's evidence)
    withheld: list[str] = field(default_factory=list)  # silent private stream: what it swallowed

    def active(self, now_ms: int) -> bool:
        if self.until_ms is not None:
            return now_ms < self.until_ms
        return self.remaining is None or self.remaining > 0

    def matches(self, path: str | None, symbol: str | None) -> bool:
        if self.endpoint and path != self.endpoint:
            return False
        return not (self.symbol and symbol != self.symbol)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **self.params,
            "endpoint": self.endpoint,
            "symbol": self.symbol,
            "remaining": self.remaining,
            "until_ms": self.until_ms,
            "hits": self.hits,
            "injected_ms": self.injected_ms,
            "first_hit_ms": self.first_hit_ms,
            "withheld": list(self.withheld),
        }


def parse_faults(doc: Any, now_ms: int, where: str) -> list[Fault]:
    """Validate a fault document; a bad one raises ``ValueError`` naming the culprit."""
    items = doc.get("faults") if isinstance(doc, dict) and "faults" in doc else doc
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list of faults or {{'faults': [...]}}")
    out = []
    for n, item in enumerate(items):
        at = f"{where}[{n}]"
        if not isinstance(item, dict) or item.get("kind") not in KINDS:
            raise ValueError(f"{at}: 'kind' must be one of {', '.join(KINDS)}")
        kind = item["kind"]
        params = {
            k: v for k, v in item.items() if k not in ("kind", "count", "seconds", "endpoint", "symbol")
        }
        count, seconds = item.get("count"), item.get("seconds")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise ValueError(f"{at}: 'count' must be a positive integer")
        if seconds is not None and (not isinstance(seconds, (int, float)) or seconds <= 0):
            raise ValueError(f"{at}: 'seconds' must be a positive number")
        if kind == "late_income":
            params.setdefault("income_type", "FUNDING_FEE")
            params.setdefault("ms", LATE_INCOME_MS)
        _check_params(kind, params, at, seconds)
        until = now_ms + int(seconds * 1000) if seconds is not None else None
        remaining = None if until is not None else (count if count is not None else 1)
        out.append(Fault(kind, params, remaining, until, item.get("endpoint"), item.get("symbol")))
    return out


def _check_params(kind: str, p: dict[str, Any], at: str, seconds: float | None) -> None:
    if kind == "http_error" and p.get("status", 500) not in (500, 502, 503, 504):
        raise ValueError(f"{at}: http_error 'status' must be 500, 502, 503 or 504")
    if kind == "http_error" and p.get("method", "any") not in ("any", "GET", "POST", "PUT", "DELETE"):
        raise ValueError(f"{at}: http_error 'method' must be GET, POST, PUT or DELETE")
    if kind == "adl" and not (
        isinstance(p.get("fraction", 0.5), (int, float)) and 0 < p.get("fraction", 0.5) <= 1
    ):
        raise ValueError(f"{at}: adl 'fraction' must be in (0, 1]")
    if kind in ("latency", "time_skew") and not isinstance(p.get("ms"), (int, float)):
        raise ValueError(f"{at}: {kind} needs 'ms' (a number)")
    if kind == "time_skew" and seconds is None:
        raise ValueError(f"{at}: time_skew is a span: give 'seconds'")
    if kind == "reject_orders":
        if p.get("code") not in REJECT_MESSAGES:
            raise ValueError(f"{at}: reject_orders 'code' must be one of {sorted(REJECT_MESSAGES)}")
        if p.get("order_kind", "any") not in ("order", "algo", "any"):
            raise ValueError(f"{at}: 'order_kind' must be order, algo or any")
    if kind in ("drop_connection", "silent_stream") and p.get("stream") not in ("market", "private"):
        raise ValueError(f"{at}: {kind} needs 'stream': market or private")
    if kind == "late_income":
        if p["income_type"] not in INCOME_TYPES:
            raise ValueError(f"{at}: late_income 'income_type' must be one of {', '.join(INCOME_TYPES)}")
        ms = p["ms"]
        if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not (0 < ms <= LATE_INCOME_MAX_MS):
            raise ValueError(f"{at}: late_income 'ms' must be a number in (0, {LATE_INCOME_MAX_MS}]")
    if kind in REORDER:
        if p.get("event", "any") not in EVENT_TYPES:
            raise ValueError(f"{at}: {kind} 'event' must be one of {', '.join(EVENT_TYPES)}")
        if not isinstance(p.get("execution_type", "any"), str):
            raise ValueError(f"{at}: {kind} 'execution_type' must be a string such as TRADE")
        if kind == "swap_events" and "after" in p:
            raise ValueError(f"{at}: swap_events always delivers after the next event: no 'after'")
        after = p.get("after", 2)
        if not isinstance(after, int) or isinstance(after, bool) or not (1 <= after <= 100):
            raise ValueError(f"{at}: {kind} 'after' must be an integer in 1..100")
        ms = p.get("ms", 500)
        if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not (0 < ms <= 60_000):
            raise ValueError(f"{at}: {kind} 'ms' must be a number in (0, 60000]")


def load_fault_file(path: Path, now_ms: int) -> list[Fault]:
    """``--faults FILE.json``; bad files are a one-line ``ConfigError``."""
    try:
        doc = json.loads(path.read_text())
        return parse_faults(doc, now_ms, str(path))
    except OSError as exc:
        raise ConfigError(f"--faults={path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--faults={path}: not JSON: {exc.msg} at line {exc.lineno}") from None
    except ValueError as exc:
        raise ConfigError(f"--faults: {exc}") from None


@dataclass
class FaultBook:
    """Active faults plus the log of every fault ever injected (``GET /sim/state``)."""

    clock_ms: Callable[[], int]
    active: list[Fault] = field(default_factory=list)
    log: list[Fault] = field(default_factory=list)

    def add(self, faults: list[Fault]) -> list[Fault]:
        """Register faults; returns the instantaneous ones for the caller to execute now."""
        now = self.clock_ms()
        for f in faults:
            f.injected_ms = now
            if f.kind in INSTANT:
                f.first_hit_ms = now
        self.log.extend(faults)
        self.active.extend(f for f in faults if f.kind not in INSTANT)
        return [f for f in faults if f.kind in INSTANT]

    def take(
        self, kind: str, path: str | None = None, symbol: str | None = None, *, hit: bool = True, **match: Any
    ) -> Fault | None:
        """The first live fault of ``kind`` matching the request; consumes one count. ``hit``:
        counted as a hit now (False: the caller counts hits itself, e.g. ``late_income``)."""
        now = self.clock_ms()
        for f in self.active:
            if f.kind != kind or not f.active(now) or not f.matches(path, symbol):
                continue
            if any(f.params.get(k, "any") not in (v, "any") for k, v in match.items()):
                continue
            if hit:
                f.hits += 1
                if f.first_hit_ms is None:
                    f.first_hit_ms = now
            if f.remaining is not None:
                f.remaining -= 1
            self.active = [x for x in self.active if x.active(now)]
            return f
        return None

    def peek(self, kind: str, **match: Any) -> Fault | None:
        """The first live fault of ``kind`` (not consumed): for span faults such as skew."""
        now = self.clock_ms()
        for f in self.active:
            if f.kind == kind and f.active(now) and all(f.params.get(k) == v for k, v in match.items()):
                return f
        return None

    def skew_ms(self) -> int:
        """The skew now; every read of a skewed clock counts as a hit of that fault."""
        f = self.peek("time_skew")
        if f is None:
            return 0
        f.hits += 1
        if f.first_hit_ms is None:
            f.first_hit_ms = self.clock_ms()
        return int(f.params["ms"])
