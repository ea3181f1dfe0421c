"""The chart pool: forked, pre-warmed workers write the same files the parent would, the jobs are
shared by cost, and a dead or failing worker never costs a chart (the parent draws it)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from perpbot.backtest import chart_pool
from perpbot.backtest import runner as runner_module
from perpbot.backtest.chart_jobs import ChartJob, equity_jobs, render, trade_jobs
from perpbot.backtest.chart_pool import ChartPool, discard_early, share, start_early, usable_cpus
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


def test_processes_pull_the_costliest_job_first() -> None:
    assert chart_pool.longest_first([1, 4, 3, 1, 3]) == [1, 2, 4, 0, 3]  # ties keep their order
    assert chart_pool.longest_first([]) == []


def _pids_drawing(
    monkeypatch: pytest.MonkeyPatch, log: Path, die_in_children: bool = False
) -> tuple[int, dict[int, int]]:
    """Make every ``_render_group`` call (forked children included) append ``pid index`` lines
    to ``log``; with ``die_in_children`` a forked child dies on its first job instead."""
    parent = os.getpid()
    index_of: dict[int, int] = {}
    real = chart_pool._render_group

    def logged(jobs: list[ChartJob]) -> list[str | None]:
        if die_in_children and os.getpid() != parent:
            os._exit(1)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{os.getpid()} {index_of[id(jobs[0])]}\n".encode())
        finally:
            os.close(fd)
        return real(jobs)

    monkeypatch.setattr(chart_pool, "_render_group", logged)
    return parent, index_of


def test_a_batch_is_pulled_job_by_job_by_every_process(
    run: BacktestResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _jobs(run, tmp_path / "pool")
    _, index_of = _pids_drawing(monkeypatch, tmp_path / "log")
    index_of.update({id(j): i for i, j in enumerate(jobs)})
    assert chart_pool._render_batch(jobs, 3) == [None] * len(jobs)
    drawn = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    assert sorted(int(i) for _, i in drawn) == list(range(len(jobs)))  # each exactly once
    assert all(j.path.stat().st_size > 1000 for j in jobs)


def test_a_dead_child_loses_only_the_job_it_pulled(
    run: BacktestResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _jobs(run, tmp_path / "pool")
    parent, index_of = _pids_drawing(monkeypatch, tmp_path / "log", die_in_children=True)
    index_of.update({id(j): i for i, j in enumerate(jobs)})
    results = chart_pool._render_batch(jobs, 2)
    lost = [i for i, r in enumerate(results) if r is not None]
    assert len(lost) <= 1 and all(results[i] == "not drawn" for i in lost)  # the pool redraws it
    drawn = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    assert {int(pid) for pid, _ in drawn} == {parent}
    assert sorted([int(i) for _, i in drawn] + lost) == list(range(len(jobs)))


def test_workers_write_the_files_the_parent_would(run: BacktestResult, tmp_path: Path) -> None:
    gc.collect()  # journals earlier tests dropped without close() stop their writer threads
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


@pytest.mark.parametrize("candles_ahead", [False, True])
def test_workers_that_worked_ahead_write_the_same_files(
    run: BacktestResult, tmp_path: Path, candles_ahead: bool
) -> None:
    # A backtest's worker builds the PNGs' figures while the run goes on (figure_stash) and draws
    # the window candles perpbot backtest sends before its loop (run_backtest's on_window).
    gc.collect()
    here = [render(j) for j in _jobs(run, tmp_path / "here")]
    with ChartPool.start(processes=2, ahead=chart_pool.BACKTEST_AHEAD) as pool:
        assert pool.pid is not None
        if candles_ahead:
            pool.send_ahead(run.candles)
        time.sleep(1.5)  # imports, warm-up, figures, candles (each stopped if the jobs came first)
        there = pool.render(_jobs(run, tmp_path / "pool"))
        pool.send_ahead(run.candles)  # after the jobs: ignored, nothing is written any more
    assert pool.in_process == []
    for a, b in zip(here, there, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_the_run_hands_its_window_candles_over_before_the_loop(
    markets4: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    events: list[tuple[str, object]] = []
    cfg = BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=False, journal_path=tmp_path / "j.sqlite3")
    drive = runner_module._drive

    async def loop_starts(*a, **k):  # type: ignore[no-untyped-def]
        events.append(("loop", None))
        return await drive(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner_module, "_drive", loop_starts)
        res = asyncio.run(
            run_backtest(cfg, loose_config(SYMS4), on_window=lambda c: events.append(("window", c)))
        )
    assert [e for e, _ in events] == ["window", "loop"]
    assert events[0][1] is res.candles and list(res.candles) == list(SYMS4)


def test_an_in_process_pool_takes_no_candles(run: BacktestResult) -> None:
    pool = ChartPool.start(processes=1)
    pool.send_ahead(run.candles)  # no worker: nothing to do, nothing raised
    assert pool.pid is None


def test_jobs_sent_first_are_drawn_while_the_caller_works(run: BacktestResult, tmp_path: Path) -> None:
    # The walk-forward hands its equity charts over, draws its own fold charts, then waits.
    gc.collect()
    jobs = _jobs(run, tmp_path)
    with ChartPool.start(processes=2) as pool:
        assert pool.pid is not None
        pool.send(jobs)
        mine = render(ChartJob("equity_png", tmp_path / "mine.png", jobs[0].data))
        paths = pool.finish()
    assert pool.in_process == [] and paths == [j.path for j in jobs]
    assert mine.read_bytes() == jobs[0].path.read_bytes()  # same chart, same bytes either way


def test_a_dead_worker_costs_no_chart(run: BacktestResult, tmp_path: Path) -> None:
    with ChartPool.start(processes=2) as pool:
        assert pool.pid is not None
        os.kill(pool.pid, signal.SIGKILL)
        time.sleep(0.05)
        pool.send_ahead(run.candles)  # a broken pipe: the run goes on, nothing raised
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


@pytest.mark.skipif(usable_cpus() < 2, reason="one core: no worker is forked")
def test_an_early_worker_is_handed_to_the_run_or_stopped() -> None:
    # ``perpbot backtest`` forks its worker before parsing (cli.main): the run's start() takes it…
    start_early()
    early = chart_pool._early
    assert early is not None and early.pid is not None
    first = early.pid
    with ChartPool.start() as pool:
        assert pool is early and chart_pool._early is None
    assert _gone(first)
    # …and when no command takes it (help, a usage error), discard_early stops and reaps it.
    start_early()
    left = chart_pool._early
    assert left is not None and left.pid is not None
    pid = left.pid
    discard_early()
    assert chart_pool._early is None and _gone(pid)
    discard_early()  # nothing left: a no-op


def test_only_a_charting_backtest_forks_before_parsing() -> None:
    from perpbot.cli.main import draws_charts

    assert draws_charts(["backtest", "--all", "--no-ml"])
    assert not draws_charts(["backtest", "--all", "--walk-forward", "4"])
    assert not draws_charts(["backtest", "--walk-forward=4"])
    assert not draws_charts(["backtest", "-h"]) and not draws_charts(["backtest", "--help"])
    assert not draws_charts(["train", "--all"]) and not draws_charts([])


def test_the_warm_up_draws_only_until_the_jobs_are_waiting() -> None:
    from perpbot.backtest.chart_pool import readable
    from perpbot.backtest.worker_inbox import warm_up

    assert warm_up() == 2  # one tiny page of each HTML kind: equity, trades
    assert "matplotlib.backends.backend_agg" in sys.modules  # imported for the real PNG jobs
    calls: list[int] = []
    assert warm_up(stop=lambda: bool(calls.append(1)) or len(calls) > 1) == 1
    r, w = os.pipe()
    try:
        assert not readable(r)
        os.write(w, b"x")
        assert readable(r)
    finally:
        os.close(r)
        os.close(w)
