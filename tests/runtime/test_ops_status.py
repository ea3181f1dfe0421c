"""How ``perpbot status`` judges protection and disagreement, as the bots require them."""

from __future__ import annotations

from perpbot.domain.types import (
    AlgoStatus,
    ConditionalOrder,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Side,
)
from perpbot.runtime.ops_journal import JournalPosition
from perpbot.runtime.ops_status import ExchangePosition, protection_of, symbol_problems

POS = Position("XRPUSDT", Side.LONG, 10.0, 2.0)


def _algo(
    kind: OrderType, qty: float = 10.0, *, side: OrderSide = OrderSide.SELL, reduce_only: bool = True
) -> ConditionalOrder:
    price = 1.9 if kind is OrderType.STOP_MARKET else 2.2
    return ConditionalOrder("XRPUSDT", 1, side, kind, qty, price, AlgoStatus.NEW, reduce_only)


def test_a_reduce_only_sl_and_tp_for_the_full_quantity_is_ok() -> None:
    p = protection_of(POS, [_algo(OrderType.STOP_MARKET), _algo(OrderType.TAKE_PROFIT_MARKET)], [])
    assert (p.sl, p.tp, p.reduce_only, p.full_qty, p.legacy, p.extra, p.ok) == (
        1.9,
        2.2,
        True,
        True,
        False,
        0,
        True,
    )


def test_missing_undersized_not_reduce_only_and_wrong_side_orders_are_each_a_fault() -> None:
    p = protection_of(POS, [_algo(OrderType.STOP_MARKET)], [])
    assert p.tp is None and not p.ok
    assert symbol_problems(None, None, p, 1)[-1] == "no take-profit"
    p = protection_of(POS, [_algo(OrderType.STOP_MARKET, 4.0), _algo(OrderType.TAKE_PROFIT_MARKET)], [])
    assert not p.full_qty and "protection does not cover the full quantity" in symbol_problems(
        None, None, p, 2
    )
    p = protection_of(
        POS, [_algo(OrderType.STOP_MARKET, reduce_only=False), _algo(OrderType.TAKE_PROFIT_MARKET)], []
    )
    assert not p.reduce_only and not p.ok
    # a BUY stop does not protect a LONG: it is an extra order, and the SL is missing
    p = protection_of(
        POS, [_algo(OrderType.STOP_MARKET, side=OrderSide.BUY), _algo(OrderType.TAKE_PROFIT_MARKET)], []
    )
    assert p.sl is None and p.extra == 1


def test_a_legacy_stop_in_the_regular_book_counts_but_is_reported() -> None:
    legacy = Order(
        "XRPUSDT", 5, OrderSide.SELL, OrderType.STOP_MARKET, 10.0, OrderStatus.NEW, reduce_only=True
    )
    p = protection_of(POS, [_algo(OrderType.TAKE_PROFIT_MARKET)], [legacy])
    assert p.ok and p.legacy and p.sl == 0.0


def test_every_disagreement_between_exchange_and_journal_is_named() -> None:
    ex = ExchangePosition("LONG", 10.0, 2.0, 0.5)
    jr = JournalPosition("LONG", 10.0, 2.0, 0, "entry")
    assert symbol_problems(ex, jr, None, 0) == ()
    assert symbol_problems(ex, None, None, 0) == (
        "exchange has LONG 10 but the journal shows no open position",
    )
    assert symbol_problems(None, jr, None, 0) == ("journal shows LONG 10 open but the exchange is flat",)
    assert symbol_problems(ex, JournalPosition("SHORT", 10.0, 2.0, 0, "entry"), None, 0) == (
        "exchange LONG but journal SHORT",
    )
    assert symbol_problems(ex, JournalPosition("LONG", 7.0, 2.0, 0, "entry"), None, 0) == (
        "exchange qty 10 but journal qty 7",
    )
    assert symbol_problems(None, None, None, 2) == ("flat with 2 resting order(s)",)
