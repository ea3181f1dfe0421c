"""The engine's order registry and hostile-mode order control: what REST queries answer, and how a
deferred execution behaves when the account changed in between."""

from __future__ import annotations

import numpy as np
import pytest

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import AlgoStatus, OrderSide, OrderStatus, OrderType, SymbolFilters
from perpbot.exchange.errors import NO_SUCH_ORDER, UNKNOWN_ORDER, ExchangeError
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.settings import SimSettings

SYM = "XRPUSDT"
BAR = 15 * 60_000
T0 = 1_704_067_200_000
FILT = SymbolFilters(SYM, tick_size=0.01, step_size=0.001, min_qty=0.001, min_notional=5.0)
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def engine(balance: float = 1000.0) -> MatchingEngine:
    n = 10
    a = np.full((n, 4), 100.0)
    e = MatchingEngine(SimSettings(slippage_bps=0.0, initial_balance=balance), {SYM: FILT})
    e.add_bars(SYM, T0 + np.arange(n, dtype=np.int64) * BAR, a[:, 0], a[:, 1], a[:, 2], a[:, 3])
    e.process_bar(SYM, 0)
    return e


def reports(e: MatchingEngine) -> list[tuple[str, OrderStatus, float, float]]:
    return [
        (ev.execution_type, ev.status, ev.last_filled_qty, ev.cumulative_filled_qty)
        for ev in e.pop_events()
        if isinstance(ev, OrderTradeUpdate)
    ]


def test_market_orders_are_queryable_by_id_and_client_id_after_they_filled() -> None:
    e = engine()
    r = e.market_order(SYM, BUY, 2.0, client_order_id="e1")
    by_id, by_cid = e.order(SYM, order_id=r.order_id), e.order(SYM, client_order_id="e1")
    assert by_id == by_cid
    assert (by_id.status, by_id.executed_qty, by_id.avg_price, by_id.type) == (
        OrderStatus.FILLED,
        2.0,
        100.0,
        OrderType.MARKET,
    )
    assert e.open_orders(SYM) == []
    with pytest.raises(ExchangeError) as err:
        e.order(SYM, client_order_id="never-sent")
    assert err.value.code == NO_SUCH_ORDER


def test_submit_then_fill_in_parts_reports_partial_then_filled() -> None:
    e = engine()
    o = e.submit_market(SYM, BUY, 3.0, client_order_id="e1")
    assert (o.status, o.executed_qty) == (OrderStatus.NEW, 0.0) and e.position(SYM) is None
    e.fill_order(SYM, o.order_id, 1.0)
    done = e.fill_order(SYM, o.order_id)
    assert (done.status, done.executed_qty) == (OrderStatus.FILLED, 3.0)
    assert reports(e) == [
        ("NEW", OrderStatus.NEW, 0.0, 0.0),
        ("TRADE", OrderStatus.PARTIALLY_FILLED, 1.0, 1.0),
        ("TRADE", OrderStatus.FILLED, 2.0, 3.0),
    ]
    assert e.fill_order(SYM, o.order_id).status is OrderStatus.FILLED  # a finished order is left alone
    assert reports(e) == []


def test_a_deferred_reduce_only_order_expires_when_the_position_is_gone() -> None:
    e = engine()
    e.market_order(SYM, BUY, 2.0)
    close = e.submit_market(SYM, SELL, 2.0, reduce_only=True, client_order_id="c1")
    e.market_order(SYM, SELL, 2.0, reduce_only=True)  # something else closed it first
    e.pop_events()
    out = e.fill_order(SYM, close.order_id)
    assert (out.status, out.executed_qty) == (OrderStatus.EXPIRED, 0.0)
    assert reports(e) == [("EXPIRED", OrderStatus.EXPIRED, 0.0, 0.0)]


def test_a_deferred_reduce_only_order_is_capped_at_what_is_left() -> None:
    e = engine()
    e.market_order(SYM, BUY, 2.0)
    close = e.submit_market(SYM, SELL, 2.0, reduce_only=True)
    e.deleverage(SYM, 1.5)
    e.pop_events()
    out = e.fill_order(SYM, close.order_id)
    assert (out.status, out.executed_qty) == (OrderStatus.FILLED, 0.5)
    assert e.position(SYM) is None


def test_a_deferred_entry_that_can_no_longer_be_margined_expires() -> None:
    e = engine(balance=100.0)
    e.set_leverage(SYM, 1)
    o = e.submit_market(SYM, BUY, 0.9, client_order_id="e1")  # 90 USDT of 100
    e.market_order(SYM, BUY, 0.5)  # 50 USDT of margin used meanwhile
    e.pop_events()
    assert e.fill_order(SYM, o.order_id).status is OrderStatus.EXPIRED
    pos = e.position(SYM)
    assert pos is not None and pos.quantity == 0.5


def test_expire_and_cancel_keep_what_was_executed() -> None:
    e = engine()
    a = e.submit_market(SYM, BUY, 2.0)
    e.fill_order(SYM, a.order_id, 0.5)
    assert e.expire_order(SYM, a.order_id).executed_qty == 0.5
    b = e.submit_market(SYM, BUY, 2.0)
    e.fill_order(SYM, b.order_id, 0.25)
    e.cancel_order(SYM, b.order_id)
    assert e.order(SYM, order_id=b.order_id).status is OrderStatus.CANCELED
    assert reports(e)[-1] == ("CANCELED", OrderStatus.CANCELED, 0.0, 0.25)
    with pytest.raises(ExchangeError) as err:
        e.cancel_order(SYM, b.order_id)
    assert err.value.code == UNKNOWN_ORDER
    pos = e.position(SYM)
    assert pos is not None and pos.quantity == 0.75


def test_algo_orders_keep_their_history() -> None:
    e = engine()
    e.market_order(SYM, BUY, 2.0)
    sl = e.place_algo(SYM, OrderType.STOP_MARKET, SELL, 2.0, 95.0, client_algo_id="sl1")
    assert e.algo_order(SYM, client_algo_id="sl1").status is AlgoStatus.NEW
    e.cancel_algo(SYM, sl.algo_id)
    got = e.algo_order(SYM, algo_id=sl.algo_id)
    assert (got.status, got.client_algo_id, got.triggered_order_id) == (AlgoStatus.CANCELED, "sl1", 0)
    with pytest.raises(ExchangeError) as err:
        e.algo_order(SYM, client_algo_id="sl2")
    assert err.value.code == NO_SUCH_ORDER


def test_deleverage_books_realised_pnl_without_commission() -> None:
    e = engine()
    e.market_order(SYM, BUY, 2.0)
    wallet = e.balance()
    o = e.deleverage(SYM, 0.5, price=110.0)
    assert o.client_order_id == "adl_autoclose" and o.type is OrderType.LIQUIDATION
    assert e.balance() == pytest.approx(wallet + 5.0)
    fill = e.fills(SYM)[-1]
    assert (fill.quantity, fill.price, fill.commission, fill.realized_pnl) == (
        0.5,
        110.0,
        0.0,
        pytest.approx(5.0),
    )
    incomes = [(r.income_type, r.income) for r in e.income_history(SYM) if r.trade_id == str(fill.trade_id)]
    assert incomes == [("REALIZED_PNL", pytest.approx(5.0))]
    with pytest.raises(ValueError):
        e.deleverage(SYM, 0.0001)  # below one step


def test_open_orders_lists_only_open_ones_in_placement_order_and_forgets_finished_ones() -> None:
    """Listing open orders must not cost O(every order ever): finished orders leave the index."""
    from perpbot.exchange.sim.registry import LiveOrder, OrderRegistry

    reg = OrderRegistry()
    orders = [
        LiveOrder(SYM, i, f"c{i}", BUY, OrderType.MARKET, OrderType.MARKET, 1.0, False, T0) for i in (1, 2, 3)
    ]
    for o in orders:
        reg.add(o)
    reg.add(LiveOrder("TRXUSDT", 4, "t4", SELL, OrderType.MARKET, OrderType.MARKET, 1.0, False, T0))
    orders[1].status = OrderStatus.FILLED
    assert [o.order_id for o in reg.open_orders(SYM)] == [1, 3]
    assert [o.order_id for o in reg.open_orders("TRXUSDT")] == [4]
    assert sorted(reg._open[SYM]) == [1, 3]  # the finished order was pruned from the index
    orders[0].status = OrderStatus.CANCELED
    orders[2].status = OrderStatus.EXPIRED
    assert reg.open_orders(SYM) == []
    assert reg.open_orders("DOGEUSDT") == []
    assert reg.find(SYM, order_id=2).status is OrderStatus.FILLED  # history is kept for REST queries
