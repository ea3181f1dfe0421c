"""Contract: conditional orders live in their own book; a trigger reports in Binance's order."""

from __future__ import annotations

import pytest

from perpbot.domain.events import AccountUpdate, AlgoUpdate, OrderTradeUpdate
from perpbot.domain.types import AlgoStatus, OrderSide, OrderStatus, OrderType
from perpbot.exchange.errors import NO_SUCH_ORDER, ExchangeError
from tests.contract.harness import BinanceVenue, SimVenue

Venue = SimVenue | BinanceVenue


async def _long_with_brackets(venue: Venue, tp_pct: float, sl_pct: float) -> tuple[float, int, int]:
    ex = venue.ex
    await ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="br-in")
    price = await venue.price("XRPUSDT")
    sl = await ex.place_conditional(
        "XRPUSDT",
        OrderType.STOP_MARKET,
        OrderSide.SELL,
        100.0,
        round(price * (1 - sl_pct), 4),
        client_algo_id="br-sl",
    )
    tp = await ex.place_conditional(
        "XRPUSDT",
        OrderType.TAKE_PROFIT_MARKET,
        OrderSide.SELL,
        100.0,
        round(price * (1 + tp_pct), 4),
        client_algo_id="br-tp",
    )
    assert sl.status is AlgoStatus.NEW and sl.reduce_only and sl.client_algo_id == "br-sl"
    return price, sl.algo_id, tp.algo_id


async def test_conditionals_are_absent_from_open_orders_and_survive_cancel_all(venue: Venue) -> None:
    ex = venue.ex
    _, sl_id, tp_id = await _long_with_brackets(venue, 0.2, 0.2)
    assert await ex.open_orders("XRPUSDT") == []
    assert sorted(a.algo_id for a in await ex.open_conditional_orders("XRPUSDT")) == sorted((sl_id, tp_id))
    await ex.cancel_all_orders("XRPUSDT")
    assert len(await ex.open_conditional_orders("XRPUSDT")) == 2
    await ex.cancel_conditional("XRPUSDT", sl_id)
    assert [a.algo_id for a in await ex.open_conditional_orders("XRPUSDT")] == [tp_id]
    assert (await ex.get_conditional("XRPUSDT", client_algo_id="br-sl")).status is AlgoStatus.CANCELED
    await ex.cancel_all_conditional("XRPUSDT")
    assert await ex.open_conditional_orders("XRPUSDT") == []
    assert (await ex.position("XRPUSDT")) is not None  # cancelling protection never closes
    with pytest.raises(ExchangeError) as err:
        await ex.get_conditional("XRPUSDT", client_algo_id="never-placed")
    assert err.value.code == NO_SUCH_ORDER


async def test_trigger_reports_algo_update_then_the_fill_and_leaves_the_sibling_open(venue: Venue) -> None:
    ex = venue.ex
    _, sl_id, tp_id = await _long_with_brackets(venue, 0.003, 0.5)
    for _ in range(100):
        await venue.advance(1)
        if await ex.position("XRPUSDT") is None:
            break
    assert await ex.position("XRPUSDT") is None, "the take-profit never triggered"
    await venue.settle()
    algo = [e for e in venue.events if isinstance(e, AlgoUpdate) and e.algo_id == tp_id]
    expected = [AlgoStatus.NEW, AlgoStatus.TRIGGERED, AlgoStatus.FINISHED]
    if isinstance(venue, BinanceVenue):
        # Binance's algo service announces the trigger before the order it sends exists (no
        # order id yet); the in-process venue of the backtest goes straight to TRIGGERED.
        expected.insert(1, AlgoStatus.TRIGGERING)
    assert [a.status for a in algo] == expected
    algo = [a for a in algo if a.status is not AlgoStatus.TRIGGERING]
    fired = algo[1].triggered_order_id
    assert fired > 0
    kinds = [
        (type(e).__name__, getattr(e, "execution_type", ""))
        for e in venue.events
        if (isinstance(e, OrderTradeUpdate) and e.order_id == fired) or e in algo[1:]
    ]
    assert kinds == [
        ("AlgoUpdate", ""),
        ("OrderTradeUpdate", "NEW"),
        ("OrderTradeUpdate", "TRADE"),
        ("AlgoUpdate", ""),
    ]
    fill = next(
        e
        for e in venue.events
        if isinstance(e, OrderTradeUpdate) and e.order_id == fired and e.execution_type == "TRADE"
    )
    assert fill.reduce_only and fill.status is OrderStatus.FILLED and fill.original_type is OrderType.MARKET
    assert fill.realized_pnl > 0
    # Binance does not cancel the sibling: the stop is still open in the algo book.
    assert [a.algo_id for a in await ex.open_conditional_orders("XRPUSDT")] == [sl_id]
    assert (await ex.get_conditional("XRPUSDT", algo_id=tp_id)).triggered_order_id == fired


async def test_events_of_an_entry_arrive_in_binance_order(venue: Venue) -> None:
    r = await venue.ex.market_order("TRXUSDT", OrderSide.SELL, 200.0, client_order_id="ord-1")
    await venue.settle()
    seq = [
        (type(e).__name__, getattr(e, "execution_type", getattr(e, "reason", "")))
        for e in venue.events
        if not isinstance(e, OrderTradeUpdate) or e.order_id == r.order_id
    ]
    assert seq == [("OrderTradeUpdate", "NEW"), ("OrderTradeUpdate", "TRADE"), ("AccountUpdate", "ORDER")]
    acc = venue.events[-1]
    assert isinstance(acc, AccountUpdate)
    assert [(p.symbol, p.position_amount) for p in acc.positions] == [("TRXUSDT", -200.0)]
