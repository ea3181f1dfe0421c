"""Chart jobs: the byte form a worker receives gives back exactly the same chart input, so a chart
drawn in a worker is byte for byte the chart drawn in the parent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perpbot.backtest.chart_jobs import ChartJob, decode, draw, encode, equity_jobs, trade_jobs
from perpbot.backtest.charts import EquityChart, equity_chart
from perpbot.backtest.runner import BacktestConfig, BacktestResult, run_backtest
from perpbot.backtest.trade_chart import candles_in_window, trade_chart_inputs

from .conftest import SYMS4, loose_config


@pytest.fixture(scope="module")
def run(markets4: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> BacktestResult:
    journal = tmp_path_factory.mktemp("jobs") / "journal.sqlite3"
    cfg = BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=False, journal_path=journal)
    return asyncio.run(run_backtest(cfg, loose_config(SYMS4)))


def _same_arrays(a: object, b: object) -> None:
    for name in a.__slots__:  # type: ignore[attr-defined]
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(x, y) and x.dtype == y.dtype, name


def test_equity_job_round_trips_exactly(run: BacktestResult, tmp_path: Path) -> None:
    chart = equity_chart(run.metrics, run.title, run.markers())
    assert chart.markers, "the fixture trips a kill switch: markers must travel too"
    for job in equity_jobs(chart, tmp_path / "e.png", tmp_path / "e.html"):
        back = decode(encode(job))
        assert (back.kind, back.path) == (job.kind, job.path)
        assert isinstance(back.data, EquityChart)
        assert (back.data.title, back.data.markers) == (chart.title, chart.markers)
        _same_arrays(back.data.portfolio, chart.portfolio)
        _same_arrays(back.data.drawdown, chart.drawdown)
        assert list(back.data.symbols) == list(chart.symbols) == list(SYMS4)
        for sym in SYMS4:
            _same_arrays(back.data.symbols[sym], chart.symbols[sym])
        assert draw(back) == draw(job)  # the worker draws the very same bytes


def test_trade_job_round_trips_exactly(run: BacktestResult, tmp_path: Path) -> None:
    candles = {s: run.candles[s] for s in SYMS4}
    inputs = trade_chart_inputs(candles, run.trades, run.markers(), run.config.journal_path)
    chart = next(c for c in inputs if c.trades and c.levels and c.markers)
    for job in trade_jobs(chart, tmp_path / "t"):
        back = decode(encode(job))
        assert back.data.trades == chart.trades  # every float exactly (repr in JSON)
        assert back.data.levels == chart.levels and back.data.markers == chart.markers
        _same_arrays(back.data.candles, job.data.candles)  # type: ignore[union-attr]
        assert draw(back) == draw(job)


def test_the_png_job_carries_merged_candles_and_draws_the_same_png(
    run: BacktestResult, tmp_path: Path
) -> None:
    # trade_jobs hands the PNG the candles merged as the PNG draws them (not the whole window
    # again); the PNG is byte for byte the one drawn from every candle, the HTML keeps them all.
    from perpbot.backtest.candle_bars import PNG_CANDLES
    from perpbot.backtest.trade_chart import trade_chart_png

    candles = {s: run.candles[s] for s in SYMS4}
    chart = next(
        c for c in trade_chart_inputs(candles, run.trades, run.markers(), run.config.journal_path) if c.trades
    )
    assert chart.candles.open_time_ms.size > PNG_CANDLES, "the fixture must be long enough to merge"
    png, html = trade_jobs(chart, tmp_path / "t")
    assert png.data.candles.open_time_ms.size <= PNG_CANDLES  # type: ignore[union-attr]
    _same_arrays(html.data.candles, chart.candles)  # type: ignore[union-attr]
    args = (chart.symbol, chart.candles, chart.trades, chart.levels, chart.markers)
    assert draw(png) == trade_chart_png(*args)


def test_kept_candles_are_the_window_the_charts_read_from_the_files(run: BacktestResult) -> None:
    # The result hands the charts the rows the run traded: the same as re-reading the market.
    for sym in SYMS4:
        want = candles_in_window(run.config.markets[sym], run.start_ms, run.end_ms)  # type: ignore[index]
        _same_arrays(run.candles[sym], want)


def test_a_job_needs_matching_data(tmp_path: Path, run: BacktestResult) -> None:
    chart = equity_chart(run.metrics, run.title)
    with pytest.raises(ValueError, match="trades_png"):
        ChartJob("trades_png", tmp_path / "x.png", chart)
    with pytest.raises(ValueError, match="pie"):
        ChartJob("pie", tmp_path / "x.png", chart)


def test_a_job_with_an_object_array_or_trailing_bytes_is_refused(run: BacktestResult, tmp_path: Path) -> None:
    # The byte form carries numbers only: an array declared as objects is never read (no
    # unpickling, whatever the header says), and bytes beyond the declared arrays are an error.
    from perpbot.backtest.array_file import BadArrayFile, dumps, loads

    chart = equity_chart(run.metrics, run.title)
    blob = encode(equity_jobs(chart, tmp_path / "e.png", tmp_path / "e.html")[0])
    meta, arrays = loads(blob)
    assert all(not a.flags.writeable for a in arrays.values())  # views into the message
    forged = dumps(meta, {"x": np.array([b"01234567"] * 2)}).replace(b'"|S8"', b'"|O8"')  # same length
    with pytest.raises(BadArrayFile, match="bad array table"):
        decode(forged)
    with pytest.raises(BadArrayFile, match="header says"):
        decode(blob + b"\0")
