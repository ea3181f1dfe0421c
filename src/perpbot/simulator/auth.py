"""Request authentication as Binance does it: API-key header, HMAC-SHA256, timestamp window.

The signature covers the *raw bytes as sent*: the query string followed directly by the body
(Binance's ``totalParams``), minus the ``signature`` pair itself. Re-encoding the parsed
parameters would accept requests Binance refuses (and the other way round), because clients do
not sort or normalise their parameters. The time check uses the wall clock (plus an injected
skew), never replay time, as Binance compares ``timestamp`` with its own server time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from perpbot.simulator.errors import BinanceError, missing

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
_KEY_RE = re.compile(r"^[A-Za-z0-9]{1,128}$")
_SIG_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def sign(secret: str, payload: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``payload`` (what a client appends as ``signature``)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _split_signature(raw: str) -> tuple[str, str | None]:
    """``raw`` without its ``signature=...`` pair, and the signature (None when absent)."""
    if not raw:
        return "", None
    kept: list[str] = []
    sig: str | None = None
    for pair in raw.split("&"):
        if pair.startswith("signature="):
            sig = pair[len("signature=") :]
        else:
            kept.append(pair)
    return "&".join(kept), sig


def parse_params(raw_query: str, raw_body: str) -> dict[str, str]:
    """Parameters from the query string and the form body (the query wins on a duplicate)."""
    params: dict[str, str] = {}
    for raw in (raw_query, raw_body):
        for k, v in parse_qsl(raw, keep_blank_values=True):
            params.setdefault(k, v)
    return params


@dataclass(slots=True)
class Authenticator:
    """The one account's key pair and the server clock the timestamp is checked against."""

    api_key: str
    api_secret: str
    server_ms: Callable[[], int]

    def check_key(self, header: str | None) -> None:
        """-2014 for a missing or malformed key, -2015 for a key this server does not know."""
        if not header or not _KEY_RE.match(header):
            raise BinanceError(-2014, "API-key format invalid.", status=401)
        if not hmac.compare_digest(header, self.api_key):
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", status=401)

    def check_signed(self, header: str | None, raw_query: str, raw_body: str) -> dict[str, str]:
        """Verify a SIGNED request; returns its parameters (without ``signature``)."""
        self.check_key(header)
        q_payload, q_sig = _split_signature(raw_query)
        b_payload, b_sig = _split_signature(raw_body)
        sig = q_sig if q_sig is not None else b_sig
        params = parse_params(q_payload, b_payload)
        ts_raw = params.get("timestamp")
        if not ts_raw:
            raise missing("timestamp")
        if not sig:
            raise missing("signature")
        try:
            ts = int(ts_raw)
            window = int(params.get("recvWindow") or DEFAULT_RECV_WINDOW)
        except ValueError:
            raise BinanceError(-1100, "Illegal characters found in parameter 'timestamp'.") from None
        if not (0 < window <= MAX_RECV_WINDOW):
            raise BinanceError(-1131, "recvWindow must be less than 60000")
        now = self.server_ms()
        if ts >= now + 1000:
            raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - ts > window:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
        if not _SIG_RE.match(sig):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        expected = sign(self.api_secret, q_payload + b_payload)
        if not hmac.compare_digest(expected, sig.lower()):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        return params
