"""Trades-on-price charts: levels come from the run's journal, every trade and trip is drawn."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perpbot.backtest.candle_bars import Candles, aggregate
from perpbot.backtest.kill_switch_policy import KillSwitchPolicy
from perpbot.backtest.runner import BacktestConfig, BacktestResult, run_backtest
from perpbot.backtest.trade_chart import (
    candles_in_window,
    levels_from_journal,
    trade_chart_html,
    write_trade_charts,
)
from perpbot.domain.types import Side

from .conftest import SYMS4, loose_config

SYM = "XRPUSDT"


@pytest.fixture(scope="module")
def run(
    markets4: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> tuple[BacktestResult, Path]:
    journal = tmp_path_factory.mktemp("tc") / "journal.sqlite3"
    cfg = BacktestConfig(
        symbols=SYMS4,
        markets=markets4,
        use_ml=False,
        journal_path=journal,
        kill_switch=KillSwitchPolicy.parse("reset-after=3"),
    )
    return asyncio.run(run_backtest(cfg, loose_config(SYMS4))), journal


def test_levels_are_the_resting_sl_tp_of_each_position(run: tuple[BacktestResult, Path]) -> None:
    res, journal = run
    trades = [t for t in res.trades if t.symbol == SYM]
    levels = levels_from_journal(journal, SYM, trades)
    assert {lv.kind for lv in levels} == {"SL", "TP"}
    for tr in trades:
        mine = [lv for lv in levels if tr.entry_time_ms <= lv.start_ms <= lv.end_ms <= tr.exit_time_ms]
        sl = [lv.price for lv in mine if lv.kind == "SL"]
        tp = [lv.price for lv in mine if lv.kind == "TP"]
        assert sl and tp, tr
        # A long is protected below its entry and targets above it; a short the other way round.
        if tr.side is Side.LONG:
            assert sl[0] < tr.entry_price < tp[0]
        else:
            assert tp[0] < tr.entry_price < sl[0]
        if tr.reason.value == "SL":  # stopped out at its stop or worse (slippage, a gap through it)
            assert tr.side.sign * (tr.exit_price - sl[-1]) <= 1e-9 * sl[-1]


def test_aggregate_keeps_every_extreme() -> None:
    rng = np.random.default_rng(3)
    close = 1 + np.cumsum(rng.normal(0, 0.01, 5_000))
    c = Candles(np.arange(5_000, dtype=np.int64) * 900_000, close, close + 0.02, close - 0.02, close)
    a = aggregate(c, 300)
    assert a.open_time_ms.size <= 300
    assert a.high.max() == c.high.max() and a.low.min() == c.low.min()
    assert a.open[0] == c.open[0] and a.close[-1] == c.close[-1]


def test_html_has_every_candle_trade_level_and_trip(run: tuple[BacktestResult, Path]) -> None:
    res, journal = run
    trades = [t for t in res.trades if t.symbol == SYM]
    market = res.config.markets[SYM]  # type: ignore[index]
    candles = candles_in_window(market, res.start_ms, res.end_ms)
    trips = [(t["time_ms"], f"{SYM} kill switch") for t in res.kill_switch_trips if t["symbol"] == SYM]
    assert trips, "the fixture's XRPUSDT must trip its kill switch"
    html = trade_chart_html(SYM, candles, trades, levels_from_journal(journal, SYM, trades), trips).decode()
    m = re.search(r'Plotly\.newPlot\(\s*"trades-xrpusdt",\s*(\[.*?\]),\s*\{', html, re.S)
    assert m is not None
    traces = {t["name"]: t for t in json.loads(m.group(1))}
    assert len(traces[SYM]["open"]) == candles.open_time_ms.size == len(market)  # every candle
    entries = len(traces.get("long entry", {"x": []})["x"]) + len(traces.get("short entry", {"x": []})["x"])
    assert entries == len(trades)
    exits = sum(len(t["x"]) for name, t in traces.items() if name.startswith("exit "))
    assert exits == len(trades)
    assert {f"exit {t.reason.value}" for t in trades} <= set(traces)
    assert "SL level" in traces and "TP level" in traces
    assert html.count(f"{SYM} kill switch") == len(trips)


def test_write_trade_charts_per_symbol(run: tuple[BacktestResult, Path], tmp_path: Path) -> None:
    res, journal = run
    candles = {s: candles_in_window(res.config.markets[s], res.start_ms, res.end_ms) for s in res.symbols}  # type: ignore[index]
    paths = write_trade_charts(tmp_path, candles, res.trades, res.markers(), journal)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"trades_{s.lower()}.{ext}" for s in SYMS4 for ext in ("png", "html"))
    for p in paths:
        assert p.stat().st_size > 10_000
    assert (tmp_path / "trades_xrpusdt.png").read_bytes()[:4] == b"\x89PNG"
    # Markers go to their own symbol's chart only.
    other = next(s for s in SYMS4 if s != SYM)
    assert f"{SYM} kill switch" not in (tmp_path / f"trades_{other.lower()}.html").read_text()
