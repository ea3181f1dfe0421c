"""ccxt's exceptions as the project's ``ExchangeError`` (Binance's code kept), secrets redacted."""

from __future__ import annotations

import logging

import ccxt
import pytest

from perpbot.exchange.binance.budget import BannedError, WeightBudget
from perpbot.exchange.binance.ccxt_client import Credentials, make_client, translate
from perpbot.exchange.binance.environment import resolve_endpoints
from perpbot.exchange.errors import ExchangeError, ExchangeUnavailable


@pytest.mark.parametrize(
    ("exc", "code", "unknown_outcome"),
    [
        (ccxt.InsufficientFunds('binanceusdm {"code":-2019,"msg":"Margin is insufficient."}'), -2019, False),
        (
            ccxt.InvalidOrder('binanceusdm {"code":-4164,"msg":"Order\'s notional must be no smaller"}'),
            -4164,
            False,
        ),
        (ccxt.BadRequest('binanceusdm {"code":-1111,"msg":"Precision is over the maximum"}'), -1111, False),
        (ccxt.InvalidNonce('binanceusdm {"code":-1021,"msg":"Timestamp outside recvWindow"}'), -1021, False),
        (ccxt.ExchangeNotAvailable('binanceusdm {"msg":"Unknown error, please check"}'), 0, True),
        (ccxt.RequestTimeout("binanceusdm POST http://h/fapi/v1/order"), 0, True),
        (ccxt.RequestTimeout('binanceusdm {"code":-1007,"msg":"Timeout waiting"}'), 0, True),
        # -1006 "Execution status unknown" (ccxt: OperationFailed, not a NetworkError): the order
        # may have executed, so it must be looked up by client id, never taken as refused.
        (
            ccxt.OperationFailed('binanceusdm {"code":-1006,"msg":"Execution status unknown."}'),
            0,
            True,
        ),
        (
            ccxt.DDoSProtection('binanceusdm 429 Too Many Requests {"code":-1003,"msg":"Too many"}'),
            -1003,
            False,
        ),
        (BannedError(1, "IP banned"), -1003, False),
    ],
)
def test_translation_keeps_binance_code(exc: Exception, code: int, unknown_outcome: bool) -> None:
    err = translate(exc)
    assert isinstance(err, ExchangeError)
    assert isinstance(err, ExchangeUnavailable) is unknown_outcome
    assert err.code == code


def test_message_is_binance_msg_and_secrets_are_removed() -> None:
    err = translate(
        ccxt.ExchangeError('binanceusdm {"code":-2015,"msg":"Invalid API-key SEKRET"}'), ("SEKRET",)
    )
    assert err.code == -2015 and err.message == "Invalid API-key ***"


def test_a_timeout_says_so_and_drops_the_signed_query() -> None:
    # ccxt's RequestTimeout text is the bare request line: the log line of a timed-out call must
    # say it timed out (the chaos check looks for it), and not carry the request's signature.
    url = "http://127.0.0.1:1/fapi/v1/order?timestamp=1&symbol=XRPUSDT&orderId=7&signature=abc123"
    err = translate(ccxt.RequestTimeout(f"binanceusdm GET {url}"))
    assert isinstance(err, ExchangeUnavailable) and err.code == 0
    assert (
        err.message == "RequestTimeout: no answer in time to binanceusdm GET http://127.0.0.1:1/fapi/v1/order"
    )


def test_client_uses_the_live_error_table_and_redacts_its_logger(caplog: pytest.LogCaptureFixture) -> None:
    ex = make_client(
        resolve_endpoints("custom", "http://127.0.0.1:1", "ws://127.0.0.1:1"),
        Credentials("KEYabc123", "SECRETxyz789"),
        WeightBudget(),
    )
    assert ex.exceptions["exact"]["-2019"] is ccxt.InsufficientFunds  # live table on a local URL
    assert ex.urls["api"]["fapiPrivate"] == "http://127.0.0.1:1/fapi/v1"
    caplog.set_level(logging.DEBUG)
    ex.logger.debug("headers %s %s", {"X-MBX-APIKEY": "KEYabc123"}, "SECRETxyz789")
    assert "KEYabc123" not in caplog.text and "SECRETxyz789" not in caplog.text and "***" in caplog.text
    assert "KEYabc123" not in repr(ex)


def test_demo_uses_binance_demo_urls() -> None:
    ex = make_client(resolve_endpoints("demo"), Credentials("k", "s"), WeightBudget())
    assert ex.urls["api"]["fapiPrivate"].startswith("https://demo-fapi.binance.com")
