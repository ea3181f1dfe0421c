"""Close detection from ORDER_TRADE_UPDATE (SPEC §10, §13 rows 3, 7, 9, 10, 11)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import OrderSide, OrderStatus, OrderType
from perpbot.engine.close_tracker import CloseFill, CloseTracker, EntryFill

from .factories import SYM, T0, order_update

MKT, SL, TP = OrderType.MARKET, OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET


def ev(
    order_id: int,
    trade_id: int,
    *,
    qty: float,
    cum: float,
    total: float,
    price: float = 0.5,
    ap: float = 0.5,
    fee: float = 0.01,
    **kw: Any,
) -> OrderTradeUpdate:
    """An execution of ``qty`` at ``price`` (0.5), commission 0.01, stamped ``T0 + trade_id``."""
    return order_update(
        order_id, trade_id, qty=qty, cum=cum, total=total, price=price, ap=ap, fee=fee, t=T0 + trade_id, **kw
    )


def test_partial_fills_emit_once_with_sums() -> None:
    tr = CloseTracker(SYM)
    out = [
        tr.on_update(
            ev(7, 1, qty=40, cum=40, total=100, price=0.50, ap=0.50, rp=-0.4, fee=0.01, reduce_only=True)
        ),
        tr.on_update(
            ev(7, 2, qty=35, cum=75, total=100, price=0.49, ap=0.4953, rp=-0.7, fee=0.02, reduce_only=True)
        ),
        tr.on_update(
            ev(7, 3, qty=25, cum=100, total=100, price=0.48, ap=0.4915, rp=-0.75, fee=0.03, reduce_only=True)
        ),
    ]
    assert out[:2] == [None, None]
    cf = out[2]
    assert isinstance(cf, CloseFill)
    assert cf.qty == pytest.approx(100)
    assert cf.realized_pnl_sum == pytest.approx(-1.85)
    assert cf.commission_sum == pytest.approx(0.06)
    assert cf.avg_price == pytest.approx(0.4915)
    assert cf.trade_ids == (1, 2, 3)
    assert cf.complete


def test_duplicate_events_never_emit_twice() -> None:
    tr = CloseTracker(SYM)
    a = ev(7, 1, qty=40, cum=40, total=100, rp=-0.4, reduce_only=True)
    b = ev(7, 2, qty=60, cum=100, total=100, rp=-0.6, reduce_only=True)
    assert tr.on_update(a) is None
    assert tr.on_update(a) is None  # redelivered partial: not double counted
    cf = tr.on_update(b)
    assert isinstance(cf, CloseFill) and cf.realized_pnl_sum == pytest.approx(-1.0)
    assert tr.on_update(b) is None  # redelivered final report: no second close


def test_entry_with_nonzero_rp_is_not_a_close() -> None:
    """SPEC §13 row 10: the design point's `rp ≠ 0` rule classified such entries as closes."""
    tr = CloseTracker(SYM)
    res = tr.on_update(ev(8, 1, qty=10, cum=10, total=10, rp=0.0123, side=OrderSide.BUY))
    assert isinstance(res, EntryFill)
    assert tr.entry_fill(8) == res
    assert res.commission_sum == pytest.approx(0.01)


def test_close_criteria() -> None:
    tr = CloseTracker(SYM)
    assert isinstance(tr.on_update(ev(1, 1, qty=1, cum=1, total=1, ot=SL)), CloseFill)
    assert isinstance(tr.on_update(ev(2, 2, qty=1, cum=1, total=1, ot=TP)), CloseFill)
    assert isinstance(tr.on_update(ev(3, 3, qty=1, cum=1, total=1, reduce_only=True)), CloseFill)
    assert isinstance(tr.on_update(ev(4, 4, qty=1, cum=1, total=1)), EntryFill)
    # A MARKET fill announced by ALGO_UPDATE's triggered order id is a close even when the
    # exchange reports neither R nor the original type (the worst live case).
    tr.expect_close(5)
    assert isinstance(tr.on_update(ev(5, 5, qty=1, cum=1, total=1)), CloseFill)
    liq = tr.on_update(
        ev(6, 6, qty=1, cum=1, total=1, o=OrderType.LIQUIDATION, x="CALCULATED", cid="autoclose-1")
    )
    assert isinstance(liq, CloseFill) and liq.liquidation


def test_zero_average_price_is_skipped_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    tr = CloseTracker(SYM)
    with caplog.at_level(logging.WARNING):
        assert tr.on_update(ev(9, 1, qty=10, cum=10, total=10, ap=0.0, reduce_only=True)) is None
    assert "average price 0" in caplog.text


def test_triggered_market_fill_carries_market_type() -> None:
    """Live reports a triggered stop as o=MARKET, ot=MARKET with R=true; the tracker keeps the
    types so the bot can fall back to the nearest stored SL/TP price (tested in test_bot.py)."""
    tr = CloseTracker(SYM)
    cf = tr.on_update(ev(10, 1, qty=10, cum=10, total=10, ap=0.4801, reduce_only=True))
    assert isinstance(cf, CloseFill)
    assert cf.original_type is MKT and cf.order_type is MKT and cf.reduce_only


def test_expired_after_partial_fill_reports_incomplete() -> None:
    tr = CloseTracker(SYM)
    assert tr.on_update(ev(11, 1, qty=4, cum=4, total=10, reduce_only=True)) is None
    end = order_update(
        11, qty=0, cum=4, total=10, ap=0.5, x="EXPIRED", status=OrderStatus.EXPIRED, reduce_only=True
    )
    cf = tr.on_update(end)
    assert isinstance(cf, CloseFill) and not cf.complete and cf.qty == 4


def test_new_order_reports_are_ignored() -> None:
    tr = CloseTracker(SYM)
    new = order_update(12, qty=0, cum=0, total=10, x="NEW", status=OrderStatus.NEW, reduce_only=True)
    assert tr.on_update(new) is None
