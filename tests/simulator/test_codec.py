"""The Binance codec: every domain object and event survives JSON and back; types are Binance's."""

from __future__ import annotations

import json

import pytest

from perpbot.domain.events import (
    AccountUpdate,
    AlgoUpdate,
    BalanceChange,
    OrderTradeUpdate,
    PositionChange,
)
from perpbot.domain.types import (
    AlgoStatus,
    ConditionalOrder,
    Fill,
    Income,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Side,
    SymbolFilters,
)
from perpbot.exchange.binance.codec.account import (
    income_from_json,
    income_json,
    position_from_json,
    position_json,
    trade_from_json,
    trade_json,
)
from perpbot.exchange.binance.codec.decimals import fmt
from perpbot.exchange.binance.codec.events import event_from_json, event_json
from perpbot.exchange.binance.codec.market import filters_from_symbol_info, symbol_info
from perpbot.exchange.binance.codec.orders import algo_from_json, algo_json, order_from_json, order_json

OTU = OrderTradeUpdate(
    1_736_300_000_000,
    "XRPUSDT",
    1000001,
    "bot-entry-1",
    OrderSide.BUY,
    OrderType.MARKET,
    OrderType.MARKET,
    "TRADE",
    OrderStatus.PARTIALLY_FILLED,
    False,
    30.0,
    10.0,
    10.0,
    2.3456,
    2.3456,
    0.011728,
    0.0,
    7,
    1_736_300_000_000,
)
ALGO = AlgoUpdate(
    1_736_300_900_000,
    "XRPUSDT",
    9000000001,
    "bot-sl-1",
    OrderSide.SELL,
    OrderType.STOP_MARKET,
    AlgoStatus.TRIGGERED,
    30.0,
    2.1,
    True,
    1000002,
)
ACC = AccountUpdate(
    1_736_300_000_000,
    "ORDER",
    (BalanceChange("USDT", 999.98, 995.3, 0.0),),
    (PositionChange("XRPUSDT", -30.0, 2.3456, -0.12, "isolated", 4.69),),
)


@pytest.mark.parametrize("ev", [OTU, ALGO, ACC])
def test_user_events_round_trip_through_json_text(ev: object) -> None:
    text = json.dumps(event_json(ev))  # type: ignore[arg-type]
    assert event_from_json(json.loads(text)) == ev


def test_order_trade_update_uses_binance_field_types() -> None:
    o = event_json(OTU)["o"]
    for key in ("i", "t", "T"):
        assert type(o[key]) is int
    for key in ("R", "m", "cp"):
        assert type(o[key]) is bool
    for key in ("q", "l", "z", "L", "ap", "n", "rp"):
        assert type(o[key]) is str
    assert {
        "s",
        "c",
        "S",
        "o",
        "ot",
        "x",
        "X",
        "i",
        "l",
        "z",
        "L",
        "ap",
        "n",
        "N",
        "T",
        "t",
        "rp",
        "R",
        "ps",
    } <= set(o)


def test_algo_update_carries_the_triggered_order_id() -> None:
    o = event_json(ALGO)["o"]
    assert (
        o["aid"] == 9000000001 and o["caid"] == "bot-sl-1" and o["X"] == "TRIGGERED" and o["ai"] == "1000002"
    )
    untriggered = event_json(
        AlgoUpdate(
            1, "XRPUSDT", 5, "c", OrderSide.BUY, OrderType.TAKE_PROFIT_MARKET, AlgoStatus.NEW, 1.0, 2.0, True
        )
    )
    assert event_from_json(untriggered).triggered_order_id == 0  # type: ignore[union-attr]


def test_unconsumed_events_decode_to_none() -> None:
    assert event_from_json({"e": "listenKeyExpired", "E": 1, "listenKey": "k"}) is None


def test_rest_objects_round_trip() -> None:
    order = Order(
        "XRPUSDT",
        1000001,
        OrderSide.SELL,
        OrderType.MARKET,
        12.3,
        OrderStatus.FILLED,
        True,
        12.3,
        2.5001,
        "bot-x",
        1_736_300_000_000,
    )
    assert order_from_json(json.loads(json.dumps(order_json(order)))) == order
    algo = ConditionalOrder(
        "XRPUSDT",
        9000000001,
        OrderSide.SELL,
        OrderType.TAKE_PROFIT_MARKET,
        12.3,
        2.9,
        AlgoStatus.NEW,
        True,
        "bot-tp",
        1_736_300_000_000,
    )
    assert algo_from_json(json.loads(json.dumps(algo_json(algo)))) == algo
    fill = Fill("XRPUSDT", 1000001, 3, OrderSide.BUY, 2.5, 10.0, 0.0125, -0.5, 1_736_300_000_000)
    assert trade_from_json(trade_json(fill)) == fill
    inc = Income("XRPUSDT", "REALIZED_PNL", -0.5, 1_736_300_000_000, "3")
    assert income_from_json(income_json(inc, 42)) == inc
    pos = Position("XRPUSDT", Side.SHORT, 10.0, 2.5, 5, 5.0, -0.2, 2.98)
    row = position_json(pos, "XRPUSDT", 2.52, 1)
    assert row["notional"] == "-25.2"  # signed: ccxt takes the side from it
    assert position_from_json(row, leverage=5) == pos
    assert position_from_json(position_json(None, "XRPUSDT", 2.5, 1)) is None


def test_symbol_filters_round_trip_through_exchange_info() -> None:
    f = SymbolFilters("TRXUSDT", 0.00001, 1.0, 1.0, 5.0, 1e7)
    info = symbol_info(f, "TRX")
    assert filters_from_symbol_info(info) == f
    assert info["pricePrecision"] == 5 and info["quantityPrecision"] == 0


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (1e-8, "0.00000001"),
        (12345678.9, "12345678.9"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e21, "1000000000000000000000"),
        (-2.5, "-2.5"),
        (3.0, "3"),
    ],
)
def test_decimal_strings_never_use_exponents_and_round_trip(x: float, text: str) -> None:
    assert fmt(x) == text
    assert float(fmt(x)) == x


def test_rest_rows_of_orders_the_bot_did_not_place_decode() -> None:
    """``openAlgoOrders`` / ``order`` rows of a person's trailing stop or stop-limit, and an
    order expired by self-trade prevention: reading the symbol's open orders (recovery,
    protection checks, the stream's resync) must not fail with a ``ValueError`` on them."""
    base = algo_json(
        ConditionalOrder(
            "XRPUSDT", 9, OrderSide.SELL, OrderType.STOP_MARKET, 10.0, 2.0, AlgoStatus.NEW, True, "m", 1
        )
    )
    trailing = algo_from_json({**base, "orderType": "TRAILING_STOP_MARKET"})
    assert trailing.type is OrderType.MARKET  # not taken for the bot's STOP_MARKET / TAKE_PROFIT_MARKET
    assert algo_from_json({**base, "orderType": "STOP"}).type is OrderType.LIMIT
    row = order_json(
        Order(
            "XRPUSDT", 1, OrderSide.BUY, OrderType.LIMIT, 10.0, OrderStatus.EXPIRED, False, 0.0, 0.0, "m", 1
        )
    )
    assert order_from_json({**row, "status": "EXPIRED_IN_MATCH"}).status is OrderStatus.EXPIRED
    assert order_from_json({**row, "type": "TAKE_PROFIT"}).type is OrderType.LIMIT
