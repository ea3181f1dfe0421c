"""Request signing as Binance documents it, checked against Binance's published example, and the
refusals a client sees over HTTP for unsigned, badly signed, stale and wrongly keyed requests."""

from __future__ import annotations

import aiohttp
import pytest

from perpbot.simulator.auth import Authenticator, sign
from perpbot.simulator.errors import BinanceError
from perpbot.simulator.server import SimServer

# Binance USDⓈ-M futures "SIGNED Endpoint Examples for POST /fapi/v1/order" (general info page).
DOC_KEY = "dbefbc809e3e83c283a984c3a1459732ea7db1360ca80c5c2c8867408d28cc83"
DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_QUERY = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
    "&recvWindow=5000&timestamp=1591702613943"
)
DOC_SIGNATURE = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
DOC_TS = 1591702613943


def _doc_auth(now: int = DOC_TS + 10) -> Authenticator:
    return Authenticator(DOC_KEY, DOC_SECRET, lambda: now)


def test_hmac_matches_binance_documented_example() -> None:
    assert sign(DOC_SECRET, DOC_QUERY) == DOC_SIGNATURE


@pytest.mark.parametrize(
    ("query", "body"),
    [
        (f"{DOC_QUERY}&signature={DOC_SIGNATURE}", ""),  # all in the query string
        ("", f"{DOC_QUERY}&signature={DOC_SIGNATURE}"),  # all in the body
    ],
)
def test_documented_request_verifies_in_query_or_body(query: str, body: str) -> None:
    params = _doc_auth().check_signed(DOC_KEY, query, body)
    assert params["symbol"] == "BTCUSDT" and params["price"] == "9000" and "signature" not in params


def test_mixed_query_and_body_sign_their_concatenation() -> None:
    query, body = (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1",
        "price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943",
    )
    sig = sign(DOC_SECRET, query + body)
    params = _doc_auth().check_signed(DOC_KEY, query, f"{body}&signature={sig}")
    assert params["quantity"] == "1" and params["timeInForce"] == "GTC"


@pytest.mark.parametrize(
    ("key", "query", "now", "code"),
    [
        (None, f"{DOC_QUERY}&signature={DOC_SIGNATURE}", DOC_TS, -2014),
        ("x" * 64, f"{DOC_QUERY}&signature={DOC_SIGNATURE}", DOC_TS, -2015),
        (DOC_KEY, DOC_QUERY, DOC_TS, -1102),
        (DOC_KEY, f"{DOC_QUERY}&signature={'0' * 64}", DOC_TS, -1022),
        (
            DOC_KEY,
            f"{DOC_QUERY.replace('price=9000', 'price=9001')}&signature={DOC_SIGNATURE}",
            DOC_TS,
            -1022,
        ),
        (DOC_KEY, f"{DOC_QUERY}&signature={DOC_SIGNATURE}", DOC_TS + 5001, -1021),
        (DOC_KEY, f"{DOC_QUERY}&signature={DOC_SIGNATURE}", DOC_TS - 1000, -1021),
    ],
)
def test_refusals(key: str | None, query: str, now: int, code: int) -> None:
    with pytest.raises(BinanceError) as err:
        _doc_auth(now).check_signed(key, query, "")
    assert err.value.code == code


def test_recv_window_above_60000_is_refused() -> None:
    q = "timestamp=1591702613943&recvWindow=60001"
    with pytest.raises(BinanceError) as err:
        _doc_auth().check_signed(DOC_KEY, f"{q}&signature={sign(DOC_SECRET, q)}", "")
    assert err.value.code == -1131


async def _get(
    http: aiohttp.ClientSession, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    async with http.get(path, headers=headers) as r:
        return r.status, await r.json()


async def test_http_refusals_are_binance_json_and_the_server_keeps_serving(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    key = {"X-MBX-APIKEY": sim.cfg.api_key}
    status, body = await _get(http, "/fapi/v3/account")
    assert (status, body["code"]) == (401, -2014)
    status, body = await _get(http, "/fapi/v3/account", {"X-MBX-APIKEY": "wrongkey"})
    assert (status, body["code"]) == (401, -2015)
    status, body = await _get(http, "/fapi/v3/account", key)
    assert (status, body["code"]) == (400, -1102) and "timestamp" in body["msg"]
    ts = sim.server_ms()
    q = f"timestamp={ts}"
    status, body = await _get(http, f"/fapi/v3/account?{q}&signature={'a' * 64}", key)
    assert (status, body["code"]) == (400, -1022)
    old = f"timestamp={ts - 6000}"
    status, body = await _get(http, f"/fapi/v3/account?{old}&signature={sign(sim.cfg.api_secret, old)}", key)
    assert (status, body["code"]) == (400, -1021)
    status, body = await _get(http, f"/fapi/v3/account?{q}&signature={sign(sim.cfg.api_secret, q)}", key)
    assert status == 200 and body["assets"][0]["walletBalance"] == "1000"
