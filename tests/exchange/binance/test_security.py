"""The key and the secret live only inside the adapter; the signature is Binance's.

Canary values are used as the simulator's credentials; every output a run produces (logs at
DEBUG, ccxt's own request logging included, exception messages and reprs, the journal, alerts) is
collected and searched for them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import OrderSide
from perpbot.engine.journal import Journal
from perpbot.exchange.binance.budget import WeightBudget
from perpbot.exchange.binance.ccxt_client import Credentials
from perpbot.exchange.binance.checks import SetupError
from perpbot.exchange.errors import ExchangeError
from tests.contract.harness import BinanceVenue

Start = Callable[..., Any]
KEY = "CanaryKey7f3a9c1e5b7d9f1a3c5e7a9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7"
SECRET = "CanarySecret2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a6"

# Binance USDT-M "SIGNED Endpoint Examples for POST /fapi/v1/order" (general API information).
DOC_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
DOC_QUERY = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
    "&recvWindow=5000&timestamp=1591702613943"
)
DOC_SIGNATURE = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"


async def test_no_output_ever_contains_the_key_or_the_secret(
    start_venue: Start, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    alerts: list[str] = []
    budget = WeightBudget(alert=alerts.append)
    texts: list[str] = []
    v: BinanceVenue = await start_venue(
        "--api-key", KEY, "--api-secret", SECRET, key=KEY, secret=SECRET, budget=budget
    )
    journal = Journal(tmp_path / "journal.sqlite")
    row = journal.record_order_request(
        time_ms=1, symbol="XRPUSDT", kind="entry", order_type="MARKET", side="BUY", qty=100.0
    )
    await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="canary-1")
    await v.inject({"kind": "reject_orders", "code": -2019, "order_kind": "order", "count": 1})
    await v.inject({"kind": "unknown_after_execution", "endpoint": "/fapi/v1/order", "count": 1})
    for call in (
        lambda: v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="canary-2"),
        lambda: v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="canary-3"),
        lambda: v.ex.get_order("XRPUSDT", client_order_id="nope"),
    ):
        try:
            await call()
        except ExchangeError as exc:
            texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
            journal.record_order_result(row, time_ms=2, status="ERROR", reason=str(exc))
    await v.settle()
    for ev in v.events:
        if isinstance(ev, OrderTradeUpdate) and ev.execution_type == "TRADE":
            journal.record_fill(ev)
    for key, secret, code in ((KEY, SECRET[::-1], "-1022"), (KEY[::-1], SECRET, "-2015")):
        wrong = await start_venue(sim=v.sim, key=key, secret=secret, connect=False)
        with pytest.raises(SetupError) as err:
            await wrong.ex.connect(["XRPUSDT"])
        assert code in str(err.value)
        texts += [str(err.value), "".join(traceback.format_exception(err.value))]
    budget.on_418(5.0)
    us = v.ex.user_stream
    texts += [repr(x) for x in (v.ex, v.ex.rest, v.ex.rest.ex, us, Credentials(KEY, SECRET))]
    texts += [str(Credentials(KEY, SECRET)), *alerts, caplog.text]
    journal.close()
    texts.append((tmp_path / "journal.sqlite").read_bytes().decode("latin-1"))
    blob = "\n".join(texts)
    assert "-2019" in blob and alerts  # the outputs were really produced
    assert "X-MBX-APIKEY" in caplog.text  # ccxt's request log was captured (and redacted)
    for secret in (KEY, SECRET, SECRET[::-1], KEY[::-1]):
        assert secret not in blob


def test_credentials_cannot_be_pickled_or_printed() -> None:
    c = Credentials(KEY, SECRET)
    assert KEY not in repr(c) and SECRET not in f"{c}"
    with pytest.raises(TypeError):
        pickle.dumps(c)


async def test_signature_matches_binance_documented_example(start_venue: Start) -> None:
    v: BinanceVenue = await start_venue(connect=False)
    ex = v.ex.rest.ex
    assert ex.hmac(ex.encode(DOC_QUERY), ex.encode(DOC_SECRET), hashlib.sha256) == DOC_SIGNATURE
    # What the adapter sends is signed the same way: HMAC-SHA256 of the exact bytes before
    # "&signature=", which the simulator (itself pinned to the example) accepts.
    real, ex.secret = ex.secret, DOC_SECRET
    req = ex.sign(
        "order", ["fapiPrivate", "v1"], "POST", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"}
    )
    body, sig = req["body"].rsplit("&signature=", 1)
    assert sig == hmac.new(DOC_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    ex.secret = real
    await v.start()  # the real credentials: the simulator verifies every signed request
    assert await v.ex.balance() > 0
