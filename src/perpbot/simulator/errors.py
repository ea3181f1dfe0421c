"""Binance's JSON errors (``{"code": -1121, "msg": "Invalid symbol."}``) as one exception type.

Every refusal the server makes is a ``BinanceError``; the app's middleware turns it into the JSON
body and HTTP status Binance uses, so no handler ever builds an error response by hand and no
exception ever reaches the client as a traceback.
"""

from __future__ import annotations

import json

from aiohttp import web


class BinanceError(Exception):
    """A request Binance would refuse: HTTP ``status`` with body ``{"code", "msg"}``."""

    def __init__(self, code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.status = status
        self.headers = headers or {}

    def response(self) -> web.Response:
        return json_response({"code": self.code, "msg": self.msg}, status=self.status, headers=self.headers)


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Compact JSON, as Binance sends it."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def missing(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def bad_param(name: str, detail: str = "") -> BinanceError:
    extra = f" {detail}" if detail else ""
    return BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.{extra}")


INVALID_SYMBOL = BinanceError(-1121, "Invalid symbol.")
