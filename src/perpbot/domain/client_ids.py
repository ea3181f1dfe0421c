"""Deterministic client order ids: the same intent on the same candle always gets the same id.

Why: after a timeout or a 503 the adapter cannot know whether Binance executed the order. With a
deterministic id it asks Binance for that id and either adopts the order or resends it under the
same id, and Binance refuses a second open order with an id already in use. A restart that
replays the same candle's decision produces the same id too, so it finds the earlier order
instead of opening a second position.

Binance's rule: 1..36 characters of ``[.A-Z:/a-z0-9_-]``.

Why in ``domain``: the bot builds the ids of its own orders (entries, closes, SL/TP) with the
same scheme the live adapter uses for an order given none, in backtest, paper and live alike.
"""

from __future__ import annotations

import hashlib
import re

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_INTENT_RE = re.compile(r"^[a-z0-9]{1,8}$")
PREFIX = "pb"
CANDLE_MS = 15 * 60_000  # the only supported kline interval (config: KLINE_INTERVAL=15m)


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def make_client_id(symbol: str, candle_open_ms: int, intent: str) -> str:
    """``pb-<symbol>-<open minute, base 36>-<intent>``; a long symbol is replaced by a hash.

    ``intent`` names what the order is for (``entry``, ``exit``, ``sl``, ``tp``, ``rev`` ...),
    lower-case letters and digits, at most 8 characters.
    """
    if not _INTENT_RE.match(intent):
        raise ValueError(f"intent {intent!r}: 1..8 lower-case letters or digits")
    if candle_open_ms < 0:
        raise ValueError(f"candle open time {candle_open_ms}: must be >= 0")
    sym = symbol.upper()
    stamp = _base36(candle_open_ms // 60_000)
    cid = f"{PREFIX}-{sym}-{stamp}-{intent}"
    if len(cid) > 36 or not CLIENT_ID_RE.match(cid):
        digest = hashlib.sha256(sym.encode()).hexdigest()[:10]
        cid = f"{PREFIX}-{digest}-{stamp}-{intent}"
    return cid


def is_valid_client_id(cid: str) -> bool:
    return bool(CLIENT_ID_RE.match(cid))


def candle_open(now_ms: int) -> int:
    """Open time of the candle ``now_ms`` falls in."""
    return now_ms - now_ms % CANDLE_MS


def is_own_client_id(symbol: str, cid: str) -> bool:
    """Whether ``cid`` was made by ``make_client_id`` for ``symbol`` (any candle, any intent):
    the bot may cancel such an order as its own; an operator's or another tool's it leaves."""
    own = make_client_id(symbol, 0, "x").rsplit("-", 2)[0] + "-"
    return cid.startswith(own)
