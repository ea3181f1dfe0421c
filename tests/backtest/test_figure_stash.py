"""Figures built ahead (while a backtest runs) give the very PNGs that fresh figures give."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perpbot.backtest import figure_stash
from perpbot.backtest.candle_bars import PNG_CANDLES, Candles, aggregate
from perpbot.backtest.chart_jobs import ChartJob, draw, equity_jobs, trade_jobs
from perpbot.backtest.charts import EquityChart, Series, equity_chart
from perpbot.backtest.runner import BacktestConfig, BacktestResult, run_backtest
from perpbot.backtest.trade_chart import chart_stem, trade_chart_inputs

from .conftest import SYMS4, loose_config


@pytest.fixture(scope="module")
def run(markets4: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> BacktestResult:
    journal = tmp_path_factory.mktemp("stash") / "journal.sqlite3"
    cfg = BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=False, journal_path=journal)
    return asyncio.run(run_backtest(cfg, loose_config(SYMS4)))


@pytest.fixture(autouse=True)
def no_figure_left() -> Iterator[None]:
    figure_stash.discard()
    yield
    figure_stash.discard()


def _png_jobs(run: BacktestResult) -> list[ChartJob]:
    out = Path("unused")
    eq = equity_chart(run.metrics, run.title, run.markers())
    jobs = equity_jobs(eq, out / "e.png", out / "e.html")[:1]
    empty = Series(np.zeros(0, dtype=np.int64), np.zeros(0))
    jobs.append(replace(jobs[0], data=EquityChart("no curve", (), empty, empty, {})))
    marked = ((int(eq.portfolio.time_ms[len(eq.portfolio.time_ms) // 2]), "XRPUSDT kill switch"),)
    jobs.append(replace(jobs[0], data=replace(eq, markers=marked)))
    for chart in trade_chart_inputs(run.candles, run.trades, run.markers(), run.config.journal_path):
        png = trade_jobs(chart, chart_stem(out, chart.symbol))[0]
        c = chart.candles
        few = Candles(*(a[:300] for a in (c.open_time_ms, c.open, c.high, c.low, c.close)))
        jobs += [png, replace(png, data=replace(chart, candles=few, trades=(), levels=(), markers=marked))]
    return jobs


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the chart without a curve
def test_a_png_drawn_on_a_figure_built_ahead_is_byte_for_byte_the_fresh_one(run: BacktestResult) -> None:
    jobs = _png_jobs(run)
    fresh = [draw(j) for j in jobs]
    layouts = ["equity" if j.kind == "equity_png" else "trades" for j in jobs]
    assert figure_stash.build_ahead(layouts) == len(jobs)
    ahead = [draw(j) for j in jobs]
    assert figure_stash._built == {"equity": [], "trades": []}  # every chart took one built ahead
    for job, a, b in zip(jobs, fresh, ahead, strict=True):
        assert a == b, (job.kind, job.data.title if isinstance(job.data, EquityChart) else job.data.symbol)


def test_take_hands_out_figures_built_ahead_then_builds_new_ones() -> None:
    assert figure_stash.build_ahead(["trades"]) == 1
    built = figure_stash._built["trades"][0]
    assert len(built[0].axes[0].xaxis.majorTicks) == figure_stash.TICKS_AHEAD
    assert figure_stash.take("trades") is built
    fig, ax = figure_stash.take("trades")  # none left: a new one, same layout
    assert fig is not built[0] and fig.axes == [ax]
    fig, axes = figure_stash.take("equity")
    assert list(axes) == fig.axes and len(axes) == 3


def test_building_ahead_stops_as_soon_as_the_jobs_are_waiting() -> None:
    jobs_waiting = iter([False, False, True])
    assert figure_stash.build_ahead(["equity", "trades", "trades"], stop=lambda: next(jobs_waiting)) == 2
    assert figure_stash.build_ahead(["equity"], stop=lambda: True) == 0


def test_trade_pngs_on_candles_drawn_ahead_are_byte_for_byte_the_fresh_ones(run: BacktestResult) -> None:
    jobs = [j for j in _png_jobs(run) if j.kind == "trades_png"]
    fresh = [draw(j) for j in jobs]
    # What the worker gets before the loop: the window candles (run.candles), merged on arrival.
    sent = {s: aggregate(c, PNG_CANDLES) for s, c in run.candles.items()}
    assert figure_stash.build_candles_ahead(sent) == len(sent)
    ahead = [draw(j) for j in jobs]
    assert figure_stash._with_candles == []  # each symbol's full-window chart took its figure
    assert ahead == fresh


def test_a_figure_is_taken_only_for_exactly_its_candles(run: BacktestResult) -> None:
    c = aggregate(next(iter(run.candles.values())), PNG_CANDLES)
    figure_stash.build_candles_ahead({"X": c})
    other = Candles(c.open_time_ms, c.open, c.high, c.low, c.close + 1e-9)
    assert figure_stash.take_trades(other)[2] is False  # a new figure: these candles differ
    _, ax, drawn = figure_stash.take_trades(Candles(*(a.copy() for a in _fields(c))))
    assert drawn and len(ax.collections) == 2  # wicks and bodies, drawn ahead
    assert figure_stash.take_trades(c)[2] is False  # taken once only


def _fields(c: Candles) -> tuple[np.ndarray, ...]:
    return (c.open_time_ms, c.open, c.high, c.low, c.close)
