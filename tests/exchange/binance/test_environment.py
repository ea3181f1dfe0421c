"""``BINANCE_ENV`` and the custom URLs, alone and through ``load_config``."""

from __future__ import annotations

import pytest

from perpbot.config import load_config
from perpbot.errors import ConfigError
from perpbot.exchange.binance.environment import DEMO_FAPI, LIVE_WS, resolve_endpoints


def test_live_demo_custom() -> None:
    assert resolve_endpoints("live").ws == LIVE_WS
    assert resolve_endpoints("DEMO").fapi == DEMO_FAPI
    e = resolve_endpoints("custom", "http://127.0.0.1:9/", "ws://127.0.0.1:9")
    assert (e.fapi, e.ws) == ("http://127.0.0.1:9", "ws://127.0.0.1:9")
    assert e.market_stream_url(["xrpusdt@kline_15m", "btcusdt@kline_15m"]) == (
        "ws://127.0.0.1:9/market/stream?streams=xrpusdt@kline_15m/btcusdt@kline_15m"
    )
    assert e.private_stream_url("K") == "ws://127.0.0.1:9/private/ws?listenKey=K"


@pytest.mark.parametrize(
    ("fapi", "ws", "culprit"),
    [
        ("ftp://h:1", "ws://h:1", "BINANCE_FAPI_URL"),
        ("http://h:1", "https://h:1", "BINANCE_WS_URL"),
        ("127.0.0.1:1", "ws://h:1", "BINANCE_FAPI_URL"),
        ("", "ws://h:1", "BINANCE_FAPI_URL"),
        ("http://h:1?x=1", "ws://h:1", "BINANCE_FAPI_URL"),
    ],
)
def test_custom_urls_are_validated(fapi: str, ws: str, culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit):
        resolve_endpoints("custom", fapi, ws)


def test_config_reads_the_environment() -> None:
    cfg = load_config(
        {"BINANCE_TESTNET": "true", "BINANCE_TESTNET_API_KEY": "dk", "BINANCE_API_KEY": "lk"}, None
    )
    assert (cfg.binance_env, cfg.testnet, cfg.api_key) == ("demo", True, "dk")
    cfg = load_config({"BINANCE_ENV": "demo", "BINANCE_TESTNET_API_KEY": "dk"}, None)
    assert (cfg.binance_env, cfg.api_key) == ("demo", "dk")
    assert load_config({}, None).binance_env == "live"
    env = {"BINANCE_ENV": "custom", "BINANCE_FAPI_URL": "http://h:1", "BINANCE_WS_URL": "ws://h:1"}
    cfg = load_config(env, None)
    assert (cfg.fapi_url, cfg.ws_url) == ("http://h:1", "ws://h:1")
    assert cfg.masked()["binance_env"] == "custom"


@pytest.mark.parametrize(
    ("env", "culprit"),
    [
        ({"BINANCE_ENV": "staging"}, "BINANCE_ENV"),
        ({"BINANCE_ENV": "live", "BINANCE_TESTNET": "1"}, "BINANCE_TESTNET"),
        ({"BINANCE_ENV": "custom", "BINANCE_FAPI_URL": "http://h:1"}, "BINANCE_WS_URL"),
    ],
)
def test_config_refuses_bad_environments(env: dict[str, str], culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit):
        load_config(env, None)
