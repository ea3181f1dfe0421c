"""Contract: market entry and exit, rejections with Binance's codes, income and recovery reads."""

from __future__ import annotations

import pytest

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import OrderSide, OrderStatus, Side
from perpbot.exchange.errors import (
    MIN_NOTIONAL,
    NO_SUCH_ORDER,
    PRECISION,
    REDUCE_ONLY_REJECTED,
    ExchangeError,
)
from tests.contract.harness import BinanceVenue, InProcessSimulator, SimVenue

Venue = SimVenue | BinanceVenue


async def test_market_entry_and_reduce_only_exit(venue: Venue) -> None:
    ex = venue.ex
    entry = await ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="in-1")
    assert entry.status is OrderStatus.FILLED and entry.executed_qty == 100.0 and entry.avg_price > 0
    pos = await ex.position("XRPUSDT")
    assert pos is not None and pos.side is Side.LONG and pos.quantity == 100.0
    assert pos.entry_price == pytest.approx(entry.avg_price)
    await venue.advance(2)
    out = await ex.market_order("XRPUSDT", OrderSide.SELL, 100.0, reduce_only=True, client_order_id="out-1")
    assert out.status is OrderStatus.FILLED and out.executed_qty == 100.0
    assert await ex.position("XRPUSDT") is None
    await venue.settle()
    trades = [e for e in venue.events if isinstance(e, OrderTradeUpdate) and e.execution_type == "TRADE"]
    assert [(t.client_order_id, t.status, t.reduce_only) for t in trades] == [
        ("in-1", OrderStatus.FILLED, False),
        ("out-1", OrderStatus.FILLED, True),
    ]
    assert trades[1].realized_pnl == pytest.approx((out.avg_price - entry.avg_price) * 100.0, abs=1e-6)


async def test_reduce_only_without_position_is_rejected(venue: Venue) -> None:
    with pytest.raises(ExchangeError) as err:
        await venue.ex.market_order("XRPUSDT", OrderSide.SELL, 10.0, reduce_only=True, client_order_id="ro-1")
    assert err.value.code == REDUCE_ONLY_REJECTED
    assert await venue.ex.position("XRPUSDT") is None


async def test_precision_and_min_notional_rejections_keep_their_codes(venue: Venue) -> None:
    with pytest.raises(ExchangeError) as err:
        await venue.ex.market_order("XRPUSDT", OrderSide.BUY, 10.05, client_order_id="prec-1")
    assert err.value.code == PRECISION
    with pytest.raises(ExchangeError) as err:
        await venue.ex.market_order("XRPUSDT", OrderSide.BUY, 1.0, client_order_id="small-1")
    assert err.value.code == MIN_NOTIONAL
    assert await venue.ex.position("XRPUSDT") is None


async def test_income_history_lists_commission_and_realized_pnl(venue: Venue) -> None:
    ex = venue.ex
    await ex.market_order("TRXUSDT", OrderSide.BUY, 100.0, client_order_id="inc-in")
    await venue.advance(1)
    await ex.market_order("TRXUSDT", OrderSide.SELL, 100.0, reduce_only=True, client_order_id="inc-out")
    rows = await ex.income_history("TRXUSDT", 0)
    kinds = [r.income_type for r in rows]
    assert kinds.count("COMMISSION") == 2 and kinds.count("REALIZED_PNL") == 1
    assert all(r.symbol == "TRXUSDT" for r in rows)
    assert [r.time_ms for r in rows] == sorted(r.time_ms for r in rows)
    only_fees = await ex.income_history("TRXUSDT", 0, ("COMMISSION",))
    assert [r.income_type for r in only_fees] == ["COMMISSION", "COMMISSION"]
    later = await ex.income_history("TRXUSDT", rows[-1].time_ms + 1)
    assert later == []


async def test_recovery_reads_find_orders_by_client_id(venue: Venue) -> None:
    ex = venue.ex
    r = await ex.market_order("XRPUSDT", OrderSide.BUY, 50.0, client_order_id="rec-1")
    o = await ex.get_order("XRPUSDT", client_order_id="rec-1")
    assert (o.order_id, o.status, o.executed_qty) == (r.order_id, OrderStatus.FILLED, 50.0)
    assert (await ex.get_order("XRPUSDT", order_id=r.order_id)).client_order_id == "rec-1"
    fills = await ex.user_trades("XRPUSDT")
    assert [(f.order_id, f.quantity) for f in fills] == [(r.order_id, 50.0)]
    with pytest.raises(ExchangeError) as err:
        await ex.get_order("XRPUSDT", client_order_id="never-sent")
    assert err.value.code == NO_SUCH_ORDER


async def test_partial_fills_are_reported_one_execution_at_a_time(venue: Venue) -> None:
    """Fills split into executions of at most 40 (the engine's knob, served by both venues)."""
    if isinstance(venue, SimVenue):
        v: SimVenue | BinanceVenue = SimVenue(max_fill_qty=40.0)
        await v.start()
    else:
        sim = await InProcessSimulator(max_fill_qty_per_execution=40.0).start()
        v = BinanceVenue(sim)  # type: ignore[arg-type]
        await v.start()
    try:
        r = await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="pf-1")
        await v.settle(
            lambda ev: any(isinstance(e, OrderTradeUpdate) and e.status is OrderStatus.FILLED for e in ev)
        )
    finally:
        await v.close()
        if isinstance(v, BinanceVenue):
            await sim.stop()
    trades = [e for e in v.events if isinstance(e, OrderTradeUpdate) and e.execution_type == "TRADE"]
    assert [(t.status, t.last_filled_qty, t.cumulative_filled_qty) for t in trades] == [
        (OrderStatus.PARTIALLY_FILLED, 40.0, 40.0),
        (OrderStatus.PARTIALLY_FILLED, 40.0, 80.0),
        (OrderStatus.FILLED, 20.0, 100.0),
    ]
    assert r.executed_qty == 100.0 and len({t.trade_id for t in trades}) == 3
