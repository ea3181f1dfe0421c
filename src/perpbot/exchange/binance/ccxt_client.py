"""The ccxt REST client, configured once: URLs per environment, the shared weight budget, the
live error table on every base URL, secrets kept out of logs, and ccxt errors → ``ExchangeError``.

Why a subclass: ccxt's per-instance limiter must be replaced by the process-wide budget
(``throttle``), and every answer's ``X-MBX-USED-WEIGHT-1M`` / 429 / 418 must reach that budget
(``handle_errors`` is the one hook that sees each response's status and headers, concurrent
requests included). Signing, parameter encoding and the code → exception table stay ccxt's.
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextvars import ContextVar
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async

from perpbot import latency
from perpbot.exchange.binance.budget import BannedError, WeightBudget
from perpbot.exchange.binance.environment import Endpoints
from perpbot.exchange.errors import ExchangeError, ExchangeUnavailable
from perpbot.exchange.port import PROTECTING

log = logging.getLogger(__name__)

_CODE_RE = re.compile(r'"code"\s*:\s*"?(-?\d+)')
_MSG_RE = re.compile(r'"msg"\s*:\s*"((?:[^"\\]|\\.)*)"')
_QUERY_RE = re.compile(r"\?\S*")  # a URL's query string (to the next space)
# Binance codes whose request may have executed: -1000 UNKNOWN, -1006 "unexpected response from
# the message bus. Execution status unknown", -1007 "Timeout waiting for response from backend".
_UNKNOWN_OUTCOME = (-1000, -1006, -1007)


# When the calling task's last request was signed (``time.monotonic``): its timestamp, and so
# the end of its recvWindow, dates from then, which can be long after the call began (the weight
# budget's 429 back-off, a clock resync). Per task: concurrent requests do not see each other's.
SIGNED_AT: ContextVar[float] = ContextVar("perpbot_signed_at", default=0.0)


# Whether the calling task's request being costed is an order placement or cancellation: set by
# ``calculate_rate_limiter_cost`` and read by ``throttle``, which ccxt's ``fetch2`` calls one
# after the other with no await between them (so no other request of the task can interleave).
_ORDER_REQUEST: ContextVar[bool] = ContextVar("perpbot_order_request", default=False)
_ORDER_PATHS = frozenset({"order", "algoOrder", "batchOrders", "allOpenOrders", "algoOpenOrders"})


def signed_at() -> float:
    """Monotonic time at which this task's last request was signed (0.0: none yet)."""
    return SIGNED_AT.get()


class Credentials:
    """API key and secret; they never appear in ``repr``/``str`` (logs, tracebacks, journals)."""

    __slots__ = ("_key", "_secret")

    def __init__(self, key: str, secret: str) -> None:
        self._key = key
        self._secret = secret

    @property
    def key(self) -> str:
        return self._key

    @property
    def secret(self) -> str:
        return self._secret

    def __repr__(self) -> str:
        return f"Credentials(key=***{len(self._key)} chars***, secret=***)"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled or copied into another process by accident
        raise TypeError("Credentials cannot be serialised")


class _Redact(logging.Filter):
    """Removes the key and the secret from any record logged through ccxt's logger (ccxt logs
    request headers, which carry ``X-MBX-APIKEY``, at DEBUG level)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(s in text for s in self.secrets):
            for s in self.secrets:
                text = text.replace(s, "***")
            record.msg, record.args = text, None
        return True


class PerpbotBinance(ccxt_async.binanceusdm):  # type: ignore[misc]
    """binanceusdm with the process-wide budget as its limiter and a response observer."""

    budget: WeightBudget

    def calculate_rate_limiter_cost(
        self, api: Any, method: Any, path: Any, params: Any, config: Any = None
    ) -> Any:
        section = api[0] if isinstance(api, list) and api else api  # ccxt passes ["fapiPrivate"]
        order = section == "fapiPrivate" and method in ("POST", "DELETE") and path in _ORDER_PATHS
        _ORDER_REQUEST.set(order)
        return super().calculate_rate_limiter_cost(api, method, path, params, config or {})

    async def throttle(self, cost: Any = None) -> None:
        """Orders (place/cancel) and the requests of a protection (``port.protecting``) may use
        the budget's margin: they never queue behind reads."""
        order = _ORDER_REQUEST.get() or PROTECTING.get()
        _ORDER_REQUEST.set(False)
        await self.budget.acquire(int(cost or 1), order=order)

    def sign(self, *args: Any, **kwargs: Any) -> Any:
        SIGNED_AT.set(time.monotonic())  # before the timestamp is taken: never later than it
        return super().sign(*args, **kwargs)

    async def fetch(self, url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        if latency.PROBE is None:
            return await super().fetch(url, method, headers, body)
        latency.PROBE.request(url, method, body)  # bench/bench_runtime.py only: the request leaves
        try:
            return await super().fetch(url, method, headers, body)
        finally:
            if latency.PROBE is not None:
                latency.PROBE.answer(url, method, body)

    def handle_errors(
        self,
        code: int,
        reason: str,
        url: str,
        method: str,
        headers: dict[str, Any],
        body: str,
        response: Any,
        requestHeaders: Any,
        requestBody: Any,
    ) -> Any:
        lower = {str(k).lower(): v for k, v in (headers or {}).items()}
        used = lower.get("x-mbx-used-weight-1m")
        if used is not None and str(used).isdigit():
            self.budget.observe_used(int(used))
        if code in (418, 429):
            retry = _float(lower.get("retry-after"), 60.0)
            if code == 418:
                self.budget.on_418(retry)
            else:
                self.budget.on_429(retry)
        return super().handle_errors(
            code, reason, url, method, headers, body, response, requestHeaders, requestBody
        )

    def __repr__(self) -> str:
        return f"PerpbotBinance({self.urls['api']['fapiPrivate']})"


def _float(v: Any, default: float) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def make_client(
    endpoints: Endpoints,
    creds: Credentials,
    budget: WeightBudget,
    *,
    timeout_ms: int = 10_000,
    recv_window_ms: int = 5_000,
) -> PerpbotBinance:
    """A configured client: ``fetchCurrencies: False`` (no sapi calls), our own time sync."""
    config: dict[str, Any] = {
        "apiKey": creds.key,
        "secret": creds.secret,
        "enableRateLimit": True,
        "timeout": timeout_ms,
        "options": {
            "fetchCurrencies": False,
            "adjustForTimeDifference": False,  # the adapter resyncs itself (start, 30 min, -1021)
            "recvWindow": recv_window_ms,
            "warnOnFetchOpenOrdersWithoutSymbol": False,
        },
    }
    if endpoints.env == "custom":
        h = endpoints.fapi
        config["urls"] = {
            "api": {
                "fapiPublic": h + "/fapi/v1",
                "fapiPublicV2": h + "/fapi/v2",
                "fapiPublicV3": h + "/fapi/v3",
                "fapiPrivate": h + "/fapi/v1",
                "fapiPrivateV2": h + "/fapi/v2",
                "fapiPrivateV3": h + "/fapi/v3",
                "fapiData": h + "/futures/data",
                "public": h + "/api/v3",
                "private": h + "/api/v3",
                "sapi": h + "/sapi/v1",
                "ws": {"linear": endpoints.ws + "/ws"},
            }
        }
    ex = PerpbotBinance(config)
    ex.budget = budget
    if endpoints.env == "demo":
        ex.enable_demo_trading(True)
    # The live USDT-M error table on every base URL (the reference, §7): a simulator URL then
    # raises the same ccxt classes as fapi.binance.com.
    ex.exceptions["exact"] = {**ex.exceptions["exact"], **ex.exceptions["linear"]["exact"]}
    ex.logger = logging.getLogger("perpbot.exchange.binance.ccxt")
    if not any(isinstance(f, _Redact) and creds.key in f.secrets for f in ex.logger.filters):
        ex.logger.addFilter(_Redact((creds.key, creds.secret)))
    return ex


def binance_code(exc: BaseException) -> int:
    """Binance's error code carried in a ccxt exception's message (0 when there is none)."""
    m = _CODE_RE.search(str(exc))
    return int(m.group(1)) if m else 0


def translate(exc: BaseException, secrets: tuple[str, ...] = ()) -> ExchangeError:
    """A ccxt (or budget) exception as the project's ``ExchangeError``, Binance's code kept.

    Outcome unknown (timeouts, connection failures, 5xx, 503 "Unknown error", -1007, -1006
    "Execution status unknown", -1000) becomes ``ExchangeUnavailable`` so that callers reconcile
    before resending; -1006 is ccxt's ``OperationFailed``, which a caller would otherwise take as
    a refusal ("nothing happened") while the order may have executed.
    """
    text = str(exc)
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    code = binance_code(exc)
    m = _MSG_RE.search(text)
    message = json.loads(f'"{m.group(1)}"') if m else text
    if isinstance(exc, BannedError):
        return ExchangeError(-1003, text)
    if isinstance(exc, ccxt.DDoSProtection):
        return ExchangeError(code or -1003, message)
    if isinstance(exc, ccxt.RequestTimeout):
        # ccxt's text is only the request line ("binanceusdm GET <url>"): say what happened, and
        # keep the URL's path only (its query carries the timestamp and the request's signature).
        return ExchangeUnavailable(f"RequestTimeout: no answer in time to {_QUERY_RE.sub('', message)}")
    if isinstance(exc, ccxt.ExchangeNotAvailable) or code in _UNKNOWN_OUTCOME:
        return ExchangeUnavailable(f"{code}: {message}" if code else message)
    if isinstance(exc, ccxt.NetworkError) and not code:
        return ExchangeUnavailable(message)
    return ExchangeError(code, message)
