"""The chart pool: forked, pre-warmed workers write the same files the parent would, the jobs are
shared by cost, and a dead or failing worker never costs a chart (the parent draws it)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from perpbot.backtest.chart_jobs import ChartJob, equity_jobs, render, trade_jobs
from perpbot.backtest.chart_pool import ChartPool, share
from perpbot.backtest.charts import equity_chart
from perpbot.backtest.runner import BacktestConfig, BacktestResult, run_backtest
from perpbot.backtest.trade_chart import chart_stem, trade_chart_inputs
from perpbot.fileio import UnwritableFolderError

from .conftest import SYMS4, loose_config


@pytest.fixture(scope="module")
def run(markets4: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> BacktestResult:
    journal = tmp_path_factory.mktemp("pool") / "journal.sqlite3"
    cfg = BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=False, journal_path=journal)
    return asyncio.run(run_backtest(cfg, loose_config(SYMS4)))


def _jobs(run: BacktestResult, out: Path) -> list[ChartJob]:
    out.mkdir(parents=True, exist_ok=True)
    jobs = equity_jobs(equity_chart(run.metrics, run.title, run.markers()), out / "e.png", out / "e.html")
    candles = {s: run.candles[s] for s in SYMS4}
    for chart in trade_chart_inputs(candles, run.trades, run.markers(), run.config.journal_path):
        jobs += trade_jobs(chart, chart_stem(out, chart.symbol))
    return jobs


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped: no zombie left behind
    return False


def test_share_balances_by_cost_longest_first() -> None:
    costs = [4, 1, 3, 1, 3, 1, 3, 1]
    groups = share(costs, 2)
    assert groups == [[0, 6, 3, 7], [2, 4, 1, 5]]
    assert [sum(costs[i] for i in g) for g in groups] == [9, 8]
    assert share([4, 1], 3) == [[0], [1]]  # no idle process without a job
    assert share([], 2) == [[]]
    assert share([1, 1, 1], 1) == [[0, 1, 2]]


def test_workers_write_the_files_the_parent_would(run: BacktestResult, tmp_path: Path) -> None:
    here = [render(j) for j in _jobs(run, tmp_path / "here")]
    with ChartPool.start(processes=2) as pool:
        pid = pool.pid
        assert pid is not None, "pytest runs one thread here: the pool must fork"
        there = pool.render(_jobs(run, tmp_path / "pool"))
    assert pool.in_process == []  # every chart came from the workers
    assert _gone(pid)
    assert [p.name for p in there] == [p.name for p in here] and len(there) == 2 + 2 * len(SYMS4)
    for a, b in zip(here, there, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_a_dead_worker_costs_no_chart(run: BacktestResult, tmp_path: Path) -> None:
    with ChartPool.start(processes=2) as pool:
        assert pool.pid is not None
        os.kill(pool.pid, signal.SIGKILL)
        time.sleep(0.05)
        jobs = _jobs(run, tmp_path)
        paths = pool.render(jobs)
    assert pool.in_process == jobs  # all drawn by the parent instead
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_a_failing_job_is_drawn_again_here_so_its_error_is_seen(run: BacktestResult, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    good, bad = equity_jobs(
        equity_chart(run.metrics, run.title), tmp_path / "e.png", tmp_path / "file" / "e.html"
    )
    with ChartPool.start(processes=2) as pool, pytest.raises(UnwritableFolderError):
        pool.render([good, bad])
    assert good.path.stat().st_size > 10_000  # the worker wrote the good one
    assert pool.in_process == [bad]


def test_an_unused_pool_stops_its_warming_worker(tmp_path: Path) -> None:
    with ChartPool.start(processes=2) as pool:
        pid = pool.pid
        assert pid is not None
    assert _gone(pid)


def test_one_core_draws_in_process(run: BacktestResult, tmp_path: Path) -> None:
    # A worker on a single core would only add its own imports and warm-up to the same CPU.
    with ChartPool.start(processes=1) as pool:
        assert pool.pid is None
        jobs = _jobs(run, tmp_path)
        pool.render(jobs)
    assert pool.in_process == jobs
