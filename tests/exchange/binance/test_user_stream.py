"""``UserStream`` over a real socket to an in-process simulator: partial fills one by one,
duplicates once, keep-alive on its own timer, a new key on -1125."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from perpbot.domain.events import ExchangeEvent, OrderTradeUpdate
from perpbot.domain.types import OrderSide, OrderStatus, OrderType
from perpbot.exchange.binance.adapter import BinanceExchange
from perpbot.exchange.binance.budget import WeightBudget
from perpbot.exchange.binance.ccxt_client import Credentials
from perpbot.exchange.binance.checks import SetupError
from perpbot.exchange.binance.codec.events import event_json
from perpbot.exchange.binance.environment import resolve_endpoints
from perpbot.exchange.binance.ws import StreamSettings
from perpbot.simulator.config import SimulatorConfig
from perpbot.simulator.server import SimServer
from tests.support.silent_server import silent_server


@pytest.fixture
async def setup() -> AsyncIterator[tuple[SimServer, BinanceExchange, list[ExchangeEvent]]]:
    srv = SimServer(SimulatorConfig(symbols=("XRPUSDT",), days=3, speed=0.0))
    await srv.start()
    ep = resolve_endpoints("custom", f"http://127.0.0.1:{srv.port}", f"ws://127.0.0.1:{srv.port}")
    ex = BinanceExchange(ep, Credentials(srv.cfg.api_key, srv.cfg.api_secret), budget=WeightBudget())
    events: list[ExchangeEvent] = []

    async def on_event(ev: ExchangeEvent) -> None:
        events.append(ev)

    ex.subscribe(on_event)
    yield srv, ex, events
    await ex.close()
    await srv.stop()


def otu(status: OrderStatus, last: float, cum: float, trade_id: int) -> OrderTradeUpdate:
    return OrderTradeUpdate(
        event_time_ms=1,
        symbol="XRPUSDT",
        order_id=77,
        client_order_id="pf-1",
        side=OrderSide.BUY,
        order_type=OrderType.MARKET,
        original_type=OrderType.MARKET,
        execution_type="TRADE",
        status=status,
        reduce_only=False,
        quantity=100.0,
        last_filled_qty=last,
        cumulative_filled_qty=cum,
        last_filled_price=1.5,
        avg_price=1.5,
        commission=0.01,
        realized_pnl=0.0,
        trade_id=trade_id,
        trade_time_ms=1,
    )


async def _until(pred: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_each_partial_fill_is_its_own_event_and_duplicates_come_once(setup: Any) -> None:
    srv, ex, events = setup
    await ex.start_user_stream(["XRPUSDT"], StreamSettings(backoff_s=0.05))
    frames = [
        otu(OrderStatus.PARTIALLY_FILLED, 30.0, 30.0, 901),
        otu(OrderStatus.PARTIALLY_FILLED, 50.0, 80.0, 902),
        otu(OrderStatus.PARTIALLY_FILLED, 50.0, 80.0, 902),  # the same execution sent twice
        otu(OrderStatus.FILLED, 20.0, 100.0, 903),
    ]
    for conn in srv.private_hub.conns:
        for f in frames:
            conn.push(json.dumps(event_json(f)))
        conn.push(json.dumps({"e": "TRADE_LITE", "E": 1}))  # kinds the bot does not consume
    await _until(lambda: len(events) == 3)
    await asyncio.sleep(0.1)
    assert [(e.status, e.last_filled_qty, e.cumulative_filled_qty) for e in events] == [
        (OrderStatus.PARTIALLY_FILLED, 30.0, 30.0),
        (OrderStatus.PARTIALLY_FILLED, 50.0, 80.0),
        (OrderStatus.FILLED, 20.0, 100.0),
    ]


async def test_keepalive_runs_on_its_own_timer(setup: Any) -> None:
    srv, ex, _ = setup
    us = await ex.start_user_stream(["XRPUSDT"], keepalive_s=0.1)
    await _until(lambda: us.keepalives >= 3)  # ccxt.pro would have stopped after one
    assert srv.listen_keys.key == us.listen_key


async def test_minus_1125_on_keepalive_takes_a_new_key(setup: Any) -> None:
    srv, ex, events = setup
    us = await ex.start_user_stream(["XRPUSDT"], StreamSettings(backoff_s=0.05), keepalive_s=0.1)
    srv.listen_keys.key = None  # Binance forgot the key; the socket stays open (the reference, §2)
    await _until(lambda: us.keys_taken >= 2 and us.socket.connected.is_set())
    assert srv.listen_keys.key == us.listen_key
    r = await ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="after-1125")
    await _until(lambda: any(isinstance(e, OrderTradeUpdate) and e.order_id == r.order_id for e in events))


async def test_a_venue_that_never_answers_the_upgrade_fails_start_up_within_the_bound(setup: Any) -> None:
    """The listen key is granted but the WebSocket upgrade hangs: start-up does not wait forever.
    Within ``first_connect_s`` it fails with one line naming the stream, the venue and the last
    failure, and the stream's tasks are stopped (no retry loop left running)."""
    srv, _, _ = setup
    async with silent_server() as (port, accepted):
        ep = resolve_endpoints("custom", f"http://127.0.0.1:{srv.port}", f"ws://127.0.0.1:{port}")
        ex = BinanceExchange(ep, Credentials(srv.cfg.api_key, srv.cfg.api_secret), budget=WeightBudget())
        settings = StreamSettings(
            connect_timeout_s=0.2, backoff_s=0.05, backoff_max_s=0.1, first_connect_s=1.0
        )
        t0 = time.monotonic()
        try:
            with pytest.raises(SetupError) as err:
                await ex.start_user_stream(["XRPUSDT"], settings)
            took = time.monotonic() - t0
            assert ex.user_stream is None
        finally:
            await ex.close()
    msg = str(err.value)
    assert "\n" not in msg and f"ws://127.0.0.1:{port}" in msg and "within 1 s" in msg, msg
    assert "TimeoutError" in msg  # the cause: the handshake never completed
    assert len(accepted) >= 2  # it did retry within the bound
    assert 1.0 <= took < 4.0
    leftover = [t for t in asyncio.all_tasks() if t.get_name() in ("ws-user", "listen-key")]
    assert leftover == []
    assert srv.listen_keys.key is None  # the key taken for the attempts was given back


def _raw_otu(symbol: str, order_type: str, orig_type: str, x: str, status: str, oid: int) -> dict[str, Any]:
    """An ``ORDER_TRADE_UPDATE`` as Binance sends it (its documented field set)."""
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": 1_700_000_000_000,
        "T": 1_700_000_000_000,
        "o": {
            **{"s": symbol, "c": f"manual-{oid}", "S": "SELL", "o": order_type, "f": "GTC", "q": "10"},
            **{"p": "0", "ap": "0", "sp": "0.5", "x": x, "X": status, "i": oid, "l": "0", "z": "0"},
            **{"L": "0", "n": "0", "N": "USDT", "T": 1_700_000_000_000, "t": 0, "b": "0", "a": "0"},
            **{"m": False, "R": True, "wt": "CONTRACT_PRICE", "ot": orig_type, "ps": "BOTH"},
            **{"cp": False, "rp": "0", "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE"},
        },
    }


async def test_order_types_and_statuses_the_codec_does_not_model_do_not_cut_the_stream(setup: Any) -> None:
    """Binance's user stream carries every order of the account: a TRAILING_STOP_MARKET or a
    STOP (a person's order, another program's), an order expired by self-trade prevention
    (EXPIRED_IN_MATCH), a value added later. None may break the connection: the frames behind
    them in the socket (here the bot's own cancel) would be lost with it, and non-trade events
    are not recovered by the resync."""
    srv, ex, events = setup
    us = await ex.start_user_stream(["XRPUSDT"], StreamSettings(backoff_s=0.05))
    frames = [
        _raw_otu("DOGEUSDT", "TRAILING_STOP_MARKET", "TRAILING_STOP_MARKET", "NEW", "NEW", 501),
        _raw_otu("XRPUSDT", "STOP", "STOP", "NEW", "NEW", 502),
        _raw_otu("XRPUSDT", "LIMIT", "LIMIT", "EXPIRED", "EXPIRED_IN_MATCH", 503),
        _raw_otu("XRPUSDT", "LIMIT", "LIMIT", "EXPIRED", "A_STATUS_ADDED_LATER", 505),  # skipped
        _raw_otu("XRPUSDT", "MARKET", "MARKET", "CANCELED", "CANCELED", 504),
    ]
    for conn in srv.private_hub.conns:
        for f in frames:
            conn.push(json.dumps(f))
    await _until(lambda: us.frames_handled == len(frames))
    await asyncio.sleep(0.1)
    assert us.socket.connects == 1 and us.socket.failures == 0
    mine = [e for e in events if isinstance(e, OrderTradeUpdate)]
    assert [(e.order_id, e.status) for e in mine][-2:] == [
        (503, OrderStatus.EXPIRED),
        (504, OrderStatus.CANCELED),
    ]


async def test_a_refused_upgrade_does_not_put_the_listen_key_in_logs_alerts_or_errors(
    setup: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The WebSocket gateway answers the upgrade with 503 (maintenance): aiohttp's error quotes
    the URL, and the user-stream URL carries the listen key (whoever holds it reads the account's
    orders, positions and balances). The log line, ``last_error`` (the stream-outage alert's
    text) and the start-up error must not carry it."""
    srv, _, _ = setup
    keys: list[str] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode()  # GET /private/ws?listenKey=K HTTP/1.1
        if "listenKey=" in request_line:  # not a connection the client dropped before its request
            keys.append(request_line.split("listenKey=", 1)[-1].split(" ", 1)[0])
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    gateway = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = gateway.sockets[0].getsockname()[1]
    ep = resolve_endpoints("custom", f"http://127.0.0.1:{srv.port}", f"ws://127.0.0.1:{port}")
    ex = BinanceExchange(ep, Credentials(srv.cfg.api_key, srv.cfg.api_secret), budget=WeightBudget())
    settings = StreamSettings(backoff_s=0.05, backoff_max_s=0.1, first_connect_s=0.5)
    try:
        with pytest.raises(SetupError) as err:
            await ex.start_user_stream(["XRPUSDT"], settings)
    finally:
        await ex.close()
        gateway.close()
        await gateway.wait_closed()
    assert keys and all(keys)  # the key did travel in the URL, and was refused
    assert "503" in str(err.value)  # the cause is still named
    for text in (str(err.value), caplog.text):
        assert not any(k in text for k in keys), text
