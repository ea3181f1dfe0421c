"""Secret redaction for every alert and every notifier log line.

Why here and not only at the call sites: an alert often carries an exception's text, and an
exception from an HTTP client can quote a URL (the webhook URL *is* its token) or a signed query.
The notifier cannot know every call site, so it scrubs everything it sends and logs against the
secrets it was given: the webhook URL, the webhook token (the URL's last path segment), the API
key and the API secret; and always any user-stream listen key (``hide_listen_keys``: a new one is
taken at every reconnect, so it cannot be a fixed secret, and a refused WebSocket upgrade's error
text quotes the whole ``...?listenKey=<key>`` URL).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"
MIN_SECRET_CHARS = 6  # shorter strings are not secrets worth matching (and would mask too much)
# ``listenKey=K`` / ``"listenKey": "K"`` / ``/ws/K`` (Binance's keys: 64 letters and digits; a
# market stream name such as ``/ws/btcusdt@kline_15m`` is too short and has an ``@``).
_LISTEN_KEY = re.compile(r"(listenKey[\"']?\s*[=:]\s*[\"']?|/ws/)[A-Za-z0-9]{16,}")


def hide_listen_keys(text: str) -> str:
    """``text`` with every listen key masked (the stream logs and every alert use this)."""
    return _LISTEN_KEY.sub(lambda m: m.group(1) + MASK, text)


def webhook_secrets(url: str) -> list[str]:
    """The webhook URL itself and its token (``.../webhooks/<id>/<token>``)."""
    url = url.strip()
    if not url:
        return []
    out = [url]
    path = urlsplit(url).path.rstrip("/")
    token = path.rsplit("/", 1)[-1] if "/" in path else ""
    if token:
        out.append(token)
    return out


class Redactor:
    """Replaces each known secret by ``***`` (longest first, so a URL goes before its token)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        uniq = {s.strip() for s in secrets if s and len(s.strip()) >= MIN_SECRET_CHARS}
        self._secrets = sorted(uniq, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, MASK)
        return hide_listen_keys(text)

    def __repr__(self) -> str:  # never the secrets, not even their number
        return "Redactor()"
