"""Metrics on hand-made trades and equity curves: every expected figure is computed by hand."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from perpbot.backtest.metrics import (
    DAY_MS,
    EquityCurve,
    compute_metrics,
    daily_returns,
    equity_curve,
    exposure,
    fingerprint,
    max_drawdown,
    profit_factor,
    sharpe_ratio,
    summarize,
)
from perpbot.domain.types import ClosedTrade, CloseReason, Side

H = 3_600_000


def trade(
    symbol: str = "XRPUSDT",
    side: Side = Side.LONG,
    entry: int = 0,
    exit_: int = H,
    entry_price: float = 1.0,
    exit_price: float = 1.1,
    qty: float = 10.0,
    fee: float = 0.0,
    funding: float = 0.0,
    reason: CloseReason = CloseReason.TP,
) -> ClosedTrade:
    rp = side.sign * (exit_price - entry_price) * qty
    return ClosedTrade(
        symbol, side, entry, exit_, entry_price, exit_price, qty, rp, fee, fee, funding, reason
    )


def test_profit_factor_by_hand() -> None:
    assert profit_factor([10.0, -5.0, 5.0, -5.0]) == pytest.approx(1.5)
    assert profit_factor([-1.0, -3.0]) == 0.0
    assert profit_factor([1.0, 2.0]) is None  # no losing trade: undefined, not infinite
    assert profit_factor([]) is None


def test_max_drawdown_by_hand() -> None:
    dd, pct = max_drawdown(np.array([100.0, 110.0, 90.0, 120.0, 60.0, 130.0]))
    assert dd == pytest.approx(60.0)
    assert pct == pytest.approx(0.5)
    assert max_drawdown(np.array([1.0, 2.0, 3.0])) == (0.0, 0.0)


def test_daily_returns_and_sharpe_by_hand() -> None:
    # Two closes a day; only the last of each UTC day counts. A close at midnight ends that day.
    t = np.array([DAY_MS // 2, DAY_MS, DAY_MS + 1000, 2 * DAY_MS, 3 * DAY_MS])
    eq = np.array([105.0, 110.0, 50.0, 99.0, 108.9])
    r = daily_returns(t, eq, 100.0)
    np.testing.assert_allclose(r, [0.10, -0.10, 0.10])
    mean, sd = 0.1 / 3, np.std([0.1, -0.1, 0.1], ddof=1)
    assert sharpe_ratio(r) == pytest.approx(mean / sd * math.sqrt(365))
    assert sharpe_ratio(np.array([0.01])) is None
    assert sharpe_ratio(np.array([0.01, 0.01, 0.01])) is None


def test_exposure_merges_overlaps_and_clips() -> None:
    assert exposure([(0, 10), (5, 20), (30, 40)], 0, 100) == pytest.approx(0.30)
    assert exposure([(-50, 10), (90, 200)], 0, 100) == pytest.approx(0.20)
    assert exposure([], 0, 100) == 0.0


def test_equity_curve_marks_open_trades_and_books_at_exit() -> None:
    t = np.array([1, 2, 3, 4]) * H
    closes = {"XRPUSDT": np.array([1.0, 1.2, 0.9, 1.5])}
    tr = trade(entry=H, exit_=3 * H + 1, entry_price=1.0, exit_price=1.4, qty=10.0, fee=0.1, funding=-0.05)
    curve = equity_curve([tr], t, closes, 100.0)
    # open at closes 1..3: 10*(c-1) - entry fee; booked at close 4: net = 4 - 0.2 - 0.05
    np.testing.assert_allclose(curve.equity, [99.9, 101.9, 98.9, 103.75])


def test_compute_metrics_by_hand() -> None:
    trades = [
        trade(exit_price=1.2, fee=0.5),  # +2 - 1 = +1
        trade(entry=2 * H, exit_=3 * H, exit_price=0.9, fee=0.5),  # -1 - 1 = -2
        trade(entry=3 * H, exit_=4 * H, exit_price=1.5, fee=0.5, funding=0.25),  # +5 - 1 + .25
    ]
    t = np.arange(1, 5) * H
    curve = EquityCurve(t, np.array([101.0, 101.0, 99.0, 103.25]))
    m = compute_metrics(trades, curve, start_equity=100.0, start_ms=0, end_ms=5 * H)
    assert m.trades == 3 and m.wins == 2 and m.losses == 1
    assert m.win_rate == pytest.approx(2 / 3)
    assert m.net_pnl == pytest.approx(3.25)
    assert m.profit_factor == pytest.approx(5.25 / 2)
    assert m.fees == pytest.approx(3.0)
    assert m.funding == pytest.approx(0.25)
    assert m.avg_trade == pytest.approx(3.25 / 3)
    assert m.max_drawdown == pytest.approx(2.0)
    assert m.max_drawdown_pct == pytest.approx(2.0 / 101.0 * 100)
    assert m.exposure == pytest.approx(3 / 5)
    assert m.return_pct == pytest.approx(3.25)


def test_summarize_splits_symbols_and_bases() -> None:
    t = np.arange(1, 5) * H
    closes = {"XRPUSDT": np.ones(4), "TRXUSDT": np.ones(4)}
    trades = [trade("XRPUSDT", exit_price=1.2), trade("TRXUSDT", Side.SHORT, exit_price=1.1)]
    rep = summarize(trades, ["XRPUSDT", "TRXUSDT"], t, closes, 1000.0, start_ms=0, end_ms=5 * H)
    assert rep.per_symbol["XRPUSDT"].net_pnl == pytest.approx(2.0)
    assert rep.per_symbol["TRXUSDT"].net_pnl == pytest.approx(-1.0)
    assert rep.per_symbol["XRPUSDT"].start_equity == 500.0
    assert rep.portfolio.net_pnl == pytest.approx(1.0)
    assert rep.portfolio.end_equity == pytest.approx(1001.0)
    assert rep.fingerprint == fingerprint(trades)


def test_fingerprint_changes_when_any_field_changes() -> None:
    base = [trade(), trade("TRXUSDT", Side.SHORT, entry=2 * H, exit_=5 * H, exit_price=0.95)]
    fp = fingerprint(base)
    assert len(fp) == 64 and fp == fingerprint(list(base))
    assert fingerprint(list(reversed(base))) == fp  # canonical order, not reporting order
    changes = {
        "symbol": "DOGEUSDT",
        "side": Side.SHORT,
        "entry_time_ms": 1,
        "exit_time_ms": H + 1,
        "entry_price": 1.0001,
        "exit_price": 1.1001,
        "quantity": 11.0,
        "realized_pnl": 1.01,
        "entry_fee": 0.001,
        "exit_fee": 0.001,
        "funding": -0.001,
        "reason": CloseReason.SL,
    }
    assert set(changes) == {f.name for f in dataclasses.fields(ClosedTrade)}
    seen = {fp}
    for name, value in changes.items():
        changed = [dataclasses.replace(base[0], **{name: value}), base[1]]
        new = fingerprint(changed)
        assert new not in seen, name
        seen.add(new)
    assert fingerprint(base[:1]) != fp
    assert fingerprint([]) != fp
