"""CAGR, Sortino, Calmar, durations, the long/short split and buy-and-hold, computed by hand."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from perpbot.backtest.metrics import EquityCurve, compute_metrics, summarize
from perpbot.backtest.ratios import (
    YEAR_MS,
    buy_and_hold,
    cagr_pct,
    calmar_ratio,
    durations_h,
    side_split,
    sortino_ratio,
)
from perpbot.domain.types import Side

from .test_metrics import H, trade


def test_cagr() -> None:
    assert cagr_pct(100.0, 121.0, 2 * YEAR_MS) == pytest.approx(10.0)
    assert cagr_pct(100.0, 110.0, YEAR_MS // 2) == pytest.approx(21.0)  # half a year extrapolated
    assert cagr_pct(100.0, 0.0, YEAR_MS) is None  # wiped out: no growth rate
    assert cagr_pct(100.0, 110.0, 0) is None


def test_sortino_uses_only_the_downside() -> None:
    r = np.array([0.02, -0.01, 0.03, -0.02])
    downside = math.sqrt((0.01**2 + 0.02**2) / 4)
    assert sortino_ratio(r) == pytest.approx(0.005 / downside * math.sqrt(365))
    assert sortino_ratio(np.array([0.01, 0.02])) is None  # no losing day
    assert sortino_ratio(np.array([-0.01])) is None


def test_calmar() -> None:
    assert calmar_ratio(20.0, 10.0) == pytest.approx(2.0)
    assert calmar_ratio(20.0, 0.0) is None and calmar_ratio(None, 5.0) is None


def test_durations_and_sides() -> None:
    trades = [
        trade(entry=0, exit_=H, exit_price=1.2),  # LONG +2, 1 h
        trade(entry=0, exit_=3 * H, exit_price=0.9),  # LONG -1, 3 h
        trade(side=Side.SHORT, entry=0, exit_=8 * H, exit_price=0.5),  # SHORT +5, 8 h
    ]
    assert durations_h(trades) == (pytest.approx(4.0), pytest.approx(3.0))
    assert durations_h([]) == (None, None)
    longs, shorts = side_split(trades, Side.LONG), side_split(trades, Side.SHORT)
    assert (longs.trades, longs.net_pnl, longs.win_rate) == (2, pytest.approx(1.0), 0.5)
    assert (shorts.trades, shorts.net_pnl, shorts.win_rate) == (1, pytest.approx(5.0), 1.0)


def test_compute_metrics_carries_the_new_figures() -> None:
    trades = [trade(exit_price=1.2), trade(side=Side.SHORT, entry=2 * H, exit_=4 * H, exit_price=1.3)]
    t = np.arange(1, 5) * H
    curve = EquityCurve(t, np.array([102.0, 102.0, 100.0, 99.0]))
    m = compute_metrics(trades, curve, start_equity=100.0, start_ms=0, end_ms=4 * H)
    assert m.cagr_pct == pytest.approx(cagr_pct(100.0, 99.0, 4 * H))
    assert m.calmar == pytest.approx(m.cagr_pct / (3.0 / 102.0 * 100))
    assert (m.long_trades, m.short_trades) == (1, 1)
    assert m.short_net_pnl == pytest.approx(-3.0) and m.long_win_rate == 1.0
    assert m.avg_duration_h == pytest.approx(1.5) and m.median_duration_h == pytest.approx(1.5)


def test_buy_and_hold_equal_weights_same_window() -> None:
    closes = {
        "XRPUSDT": np.array([1.0, 2.0, 1.5]),  # +50 %
        "TRXUSDT": np.array([np.nan, 4.0, 2.0]),  # listed late: bought at 4, -50 %
    }
    bh = buy_and_hold(["XRPUSDT", "TRXUSDT"], closes, 1000.0, YEAR_MS)
    assert bh.per_symbol_return_pct == {"XRPUSDT": pytest.approx(50.0), "TRXUSDT": pytest.approx(-50.0)}
    # equity: 500*[1,2,1.5] + [500 cash, 500, 250] = [1000, 1500, 1000]
    assert bh.end_equity == pytest.approx(1000.0) and bh.return_pct == pytest.approx(0.0)
    assert bh.max_drawdown_pct == pytest.approx(500 / 1500 * 100)
    assert bh.cagr_pct == pytest.approx(0.0)


def test_summarize_reports_the_benchmark() -> None:
    t = np.arange(1, 5) * H
    closes = {"XRPUSDT": np.array([1.0, 1.1, 1.2, 1.3])}
    rep = summarize([], ["XRPUSDT"], t, closes, 1000.0, start_ms=0, end_ms=5 * H)
    assert rep.benchmark is not None and rep.benchmark.return_pct == pytest.approx(30.0)
    assert rep.as_dict()["buy_and_hold"]["per_symbol_return_pct"] == {"XRPUSDT": pytest.approx(30.0)}


def _many_closes(symbols: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    closes = {}
    for i in range(symbols):
        px = np.exp(np.cumsum(rng.normal(0.0, 0.01, n))) * (1 + i)
        px[: i * 3] = np.nan  # listed later and later
        closes[f"S{i:03d}USDT"] = px
    return closes


def test_buy_and_hold_sums_the_legs_as_the_stacked_sum_did() -> None:
    closes = _many_closes(30, 500)
    syms = [*closes, "GONEUSDT"]  # a symbol without closes: its share waits in cash
    bh = buy_and_hold(syms, closes, 1000.0, YEAR_MS)
    share = 1000.0 / len(syms)
    legs = []
    for px in closes.values():
        held = px / px[np.flatnonzero(np.isfinite(px))[0]]
        legs.append(np.where(np.isnan(held), 1.0, held) * share)
    equity = np.sum(legs, axis=0) + share
    assert bh.end_equity == float(equity[-1])  # bit for bit, not approx
    peak = np.maximum.accumulate(np.concatenate(([1000.0], equity)))
    assert bh.max_drawdown_pct == float(np.max((peak[1:] - equity) / peak[1:])) * 100.0


def test_buy_and_hold_memory_does_not_grow_with_the_symbols() -> None:
    n = 20_000
    closes = _many_closes(60, n)
    tracemalloc.start()
    try:
        buy_and_hold(list(closes), closes, 1000.0, YEAR_MS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * n * 8  # a few timeline-long arrays, not two per symbol (60 here)
