"""Where the adapter connects: Binance live, Binance demo trading, or a custom URL pair.

Why one resolved object: REST (ccxt) and the two WebSocket streams must always point at the same
venue. A bot whose REST goes to demo while its user stream listens to live would see no fills and
would act on a stale account, so the choice is made once, validated once, and shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from perpbot.errors import ConfigError

ENVIRONMENTS = ("live", "demo", "custom")

# Binance's documented endpoints (the reference, §8, for demo trading).
LIVE_FAPI = "https://fapi.binance.com"
LIVE_WS = "wss://fstream.binance.com"
DEMO_FAPI = "https://demo-fapi.binance.com"
DEMO_WS = "wss://fstream.binancefuture.com"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Base URLs of one venue: ``fapi`` (REST root, no path) and ``ws`` (stream root, no path)."""

    env: str
    fapi: str
    ws: str

    def market_stream_url(self, streams: list[str]) -> str:
        """Combined market stream (``{"stream", "data"}`` frames) for ``streams``."""
        return f"{self.ws}/market/stream?streams={'/'.join(streams)}"

    def private_stream_url(self, listen_key: str) -> str:
        return f"{self.ws}/private/ws?listenKey={listen_key}"


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(
            f"{name}={url!r}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}={url!r}: no query or fragment allowed")
    return url


def resolve_endpoints(env: str, fapi_url: str = "", ws_url: str = "") -> Endpoints:
    """Validate ``BINANCE_ENV`` and, for ``custom``, ``BINANCE_FAPI_URL`` / ``BINANCE_WS_URL``."""
    env = env.strip().lower()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"BINANCE_ENV={env!r}: expected one of {', '.join(ENVIRONMENTS)}")
    if env == "live":
        return Endpoints("live", LIVE_FAPI, LIVE_WS)
    if env == "demo":
        return Endpoints("demo", DEMO_FAPI, DEMO_WS)
    if not fapi_url.strip() or not ws_url.strip():
        raise ConfigError("BINANCE_ENV=custom: set both BINANCE_FAPI_URL and BINANCE_WS_URL")
    return Endpoints(
        "custom",
        _check_url("BINANCE_FAPI_URL", fapi_url, ("http", "https")),
        _check_url("BINANCE_WS_URL", ws_url, ("ws", "wss")),
    )
