"""Binance's request-weight and order-count limits, on the wall clock.

Why fixed windows: Binance counts weight per IP in calendar minutes (the counter in
``X-MBX-USED-WEIGHT-1M`` drops to zero at each minute boundary), and order counts per account in
10-second and 1-minute windows. Over the weight limit the answer is HTTP 429 with ``Retry-After``
(seconds to the window's end) and code -1003; a client that keeps sending while told to back off
is banned: HTTP 418 with a ``Retry-After`` covering the ban.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from perpbot.simulator.errors import BinanceError

WEIGHT_LIMIT = 2400
ORDERS_10S = 300
ORDERS_1M = 1200
BAN_MS = 120_000  # Binance's first ban lasts 2 minutes (it grows for repeat offenders)

_FIXED: dict[tuple[str, str], int] = {
    ("GET", "/fapi/v1/exchangeInfo"): 1,
    ("GET", "/fapi/v1/time"): 1,
    ("GET", "/fapi/v1/ping"): 1,
    ("GET", "/fapi/v1/fundingRate"): 1,
    ("GET", "/fapi/v1/openInterest"): 1,
    ("GET", "/futures/data/openInterestHist"): 1,
    ("GET", "/fapi/v3/account"): 5,
    ("GET", "/fapi/v2/account"): 5,
    ("GET", "/fapi/v3/balance"): 5,
    ("GET", "/fapi/v2/balance"): 5,
    ("GET", "/fapi/v3/positionRisk"): 5,
    ("GET", "/fapi/v2/positionRisk"): 5,
    ("GET", "/fapi/v1/leverageBracket"): 1,
    ("GET", "/fapi/v1/positionSide/dual"): 30,
    ("GET", "/fapi/v1/multiAssetsMargin"): 30,
    ("POST", "/fapi/v1/positionSide/dual"): 1,
    ("POST", "/fapi/v1/leverage"): 1,
    ("POST", "/fapi/v1/marginType"): 1,
    ("GET", "/fapi/v1/income"): 30,
    ("GET", "/fapi/v1/userTrades"): 5,
    ("POST", "/fapi/v1/order"): 0,
    ("GET", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/order"): 1,
    ("DELETE", "/fapi/v1/allOpenOrders"): 1,
    ("POST", "/fapi/v1/algoOrder"): 0,
    ("GET", "/fapi/v1/algoOrder"): 1,
    ("DELETE", "/fapi/v1/algoOrder"): 1,
    ("DELETE", "/fapi/v1/algoOpenOrders"): 1,
    ("POST", "/fapi/v1/listenKey"): 1,
    ("PUT", "/fapi/v1/listenKey"): 1,
    ("DELETE", "/fapi/v1/listenKey"): 1,
}
ORDER_ROUTES = frozenset({("POST", "/fapi/v1/order"), ("POST", "/fapi/v1/algoOrder")})


def mono_ms() -> int:
    return time.monotonic_ns() // 1_000_000


@dataclass(slots=True)
class PacedReplayClock:
    """Replay time that runs at wall speed between two jumps of the replay (``perpbot paper``).

    Why: a paper replay packs days of candles into minutes of wall time, so per-minute request
    limits counted on the wall clock would throttle it a hundredfold while counting on the bare
    replay time would freeze a ``Retry-After`` wait (replay time stands still while a candle is
    handled). Here every candle's requests fall into that candle's replay minute, as they do live
    (a bot's requests follow the candle close within seconds), and a back-off of N seconds still
    ends after N seconds of wall time. Monotonic even when a candle takes longer than its step.
    """

    replay_ms: Callable[[], int]
    wall_ms: Callable[[], int] = mono_ms
    _base: int = field(default=-1, init=False)
    _wall_at_base: int = field(default=0, init=False)
    _last: int = field(default=0, init=False)

    def __call__(self) -> int:
        base, wall = self.replay_ms(), self.wall_ms()
        if base != self._base:
            self._base, self._wall_at_base = base, wall
        self._last = max(self._last, base + wall - self._wall_at_base)
        return self._last


def request_weight(method: str, path: str, params: Mapping[str, str]) -> int:
    """Binance's weight of one request (by method, path and, for some, the parameters)."""
    if path == "/fapi/v1/klines" or path.endswith("Klines"):
        limit = _int(params.get("limit"), 500)
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    if path in ("/fapi/v1/openOrders", "/fapi/v1/openAlgoOrders"):
        return 1 if params.get("symbol") else 40
    if path == "/fapi/v1/premiumIndex":
        return 1 if params.get("symbol") else 10
    return _FIXED.get((method, path), 1)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


@dataclass(slots=True)
class RateLimiter:
    """Weight per minute, order counts per 10 s and per minute, and the 429 → 418 escalation."""

    clock_ms: Callable[[], int]
    weight_limit: int = WEIGHT_LIMIT
    orders_10s_limit: int = ORDERS_10S
    orders_1m_limit: int = ORDERS_1M
    _minute: int = -1
    used: int = 0
    _o10_window: int = -1
    orders_10s: int = 0
    _o1m_window: int = -1
    orders_1m: int = 0
    _backoff_until: int = 0
    _banned_until: int = 0

    def _roll(self, now: int) -> None:
        if now // 60_000 != self._minute:
            self._minute, self.used = now // 60_000, 0
        if now // 10_000 != self._o10_window:
            self._o10_window, self.orders_10s = now // 10_000, 0
        if now // 60_000 != self._o1m_window:
            self._o1m_window, self.orders_1m = now // 60_000, 0

    def headers(self, is_order: bool) -> dict[str, str]:
        h = {"X-MBX-USED-WEIGHT-1M": str(self.used)}
        if is_order:
            h["X-MBX-ORDER-COUNT-10S"] = str(self.orders_10s)
            h["X-MBX-ORDER-COUNT-1M"] = str(self.orders_1m)
        return h

    def admit(self, weight: int, is_order: bool) -> None:
        """Count the request or refuse it with 429 / 418 (``BinanceError`` carries the headers)."""
        now = self.clock_ms()
        self._roll(now)
        if now < self._banned_until:
            raise self._ban_error(now)
        if now < self._backoff_until:
            # Still told to back off and sending anyway: Binance bans the IP.
            self._banned_until = now + BAN_MS
            raise self._ban_error(now)
        if self.used + weight > self.weight_limit:
            self.used += weight
            self._backoff_until = (self._minute + 1) * 60_000
            raise self.too_many(now, self._backoff_until)
        self.used += weight
        if is_order:
            if self.orders_10s + 1 > self.orders_10s_limit or self.orders_1m + 1 > self.orders_1m_limit:
                raise BinanceError(
                    -1015,
                    f"Too many new orders; current limit is {self.orders_10s_limit} orders per 10 SECOND.",
                    status=429,
                    headers={"Retry-After": "10", **self.headers(True)},
                )
            self.orders_10s += 1
            self.orders_1m += 1

    def too_many(self, now: int, until: int) -> BinanceError:
        retry = max(1, -(-(until - now) // 1000))
        return BinanceError(
            -1003,
            f"Too many requests; current limit of IP is {self.weight_limit} requests per minute. "
            "Please use the websocket for live updates to avoid polling the API.",
            status=429,
            headers={"Retry-After": str(retry), "X-MBX-USED-WEIGHT-1M": str(self.used)},
        )

    def _ban_error(self, now: int) -> BinanceError:
        retry = max(1, -(-(self._banned_until - now) // 1000))
        return BinanceError(
            -1003,
            f"Way too many requests; IP banned until {self._banned_until}. "
            "Please use the websocket for live updates to avoid bans.",
            status=418,
            headers={"Retry-After": str(retry), "X-MBX-USED-WEIGHT-1M": str(self.used)},
        )

    def state(self) -> dict[str, int]:
        return {
            "used_weight_1m": self.used,
            "orders_10s": self.orders_10s,
            "orders_1m": self.orders_1m,
            "banned_until_ms": self._banned_until,
        }
