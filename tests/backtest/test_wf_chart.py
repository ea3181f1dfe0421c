"""Walk-forward charts: fold boundaries and, per fold and symbol, whether a model was trained."""

from __future__ import annotations

import csv
import gc
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from perpbot.backtest import chart_pool
from perpbot.backtest.chart_jobs import decode, draw, encode, walk_forward_jobs
from perpbot.backtest.runner import BacktestConfig
from perpbot.backtest.walk_forward import run_walk_forward, walk_forward_renderable
from perpbot.backtest.wf_chart import WalkForwardChart, fold_summary, walk_forward_chart
from perpbot.exchange.filters import is_multiple

from .conftest import DAY_MS, loose_config

SYMS = ("XRPUSDT", "TRXUSDT")


def test_walk_forward_writes_fold_charts(
    markets4: dict[str, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every chart, the fold charts included, is a job for the chart worker forked before the
    # folds ran (issue 13): none is drawn in this process when it could fork.
    pools: list[tuple[chart_pool.ChartPool, int | None]] = []
    real_start = chart_pool.ChartPool.start

    def start(processes: int | None = None) -> chart_pool.ChartPool:
        pool = real_start(processes)
        pools.append((pool, pool.pid))
        return pool

    monkeypatch.setattr(chart_pool.ChartPool, "start", start)
    gc.collect()  # journals earlier tests dropped without close() stop their writer threads
    markets = {s: markets4[s] for s in SYMS}
    # TRXUSDT is "listed" 25 days late: fold 1 (test from day 15) has no history to train it on.
    first = int(markets["TRXUSDT"].index.as_unit("ms").asi8[0])
    markets["TRXUSDT"] = markets["TRXUSDT"][
        markets["TRXUSDT"].index >= pd.Timestamp(first + 25 * DAY_MS, unit="ms", tz="UTC")
    ]
    cfg = BacktestConfig(symbols=SYMS, markets=markets, use_ml=True)
    wf = run_walk_forward(
        cfg, loose_config(SYMS), folds=3, out_dir=tmp_path, lgbm_overrides={"n_estimators": 20}
    )

    assert len(pools) == 1
    pool, pid = pools[0]
    if pid is not None:  # forked (on one core, or with threads running, all are drawn here)
        assert pool.in_process == []
    png, html_path = tmp_path / "walk_forward.png", tmp_path / "walk_forward.html"
    assert wf.charts == (png, html_path)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000

    folds = fold_summary(wf)
    assert [f[0] for f in folds] == [1, 2, 3]
    assert folds[0][3]["TRXUSDT"] is False  # no model in fold 1
    assert any(had["XRPUSDT"] for *_, had in folds)
    for (_, _, b, _), (_, a_next, _, _) in itertools.pairwise(folds):
        assert b == a_next  # contiguous test windows

    html = html_path.read_text()
    m = re.search(r'Plotly\.newPlot\(\s*"walk-forward",\s*(\[.*?\]),\s*\{', html, re.S)
    assert m is not None
    traces = {t["name"]: t for t in json.loads(m.group(1))}
    assert {"ML on", "ML off", "models"} <= set(traces)
    expected = [
        f"fold {i} {s}: {'model trained' if had[s] else 'no model (unfiltered)'}"
        for i, _, _, had in folds
        for s in SYMS
    ]
    assert traces["models"]["text"] == expected
    for i, *_ in folds:
        assert f"fold {i}: " in html
    console = Console(width=200, record=True)
    console.print(walk_forward_renderable(wf))
    # The walk-forward's trades.csv prices are on each symbol's tick too.
    ticks = {s: f.tick_size for s, f in wf.folds[-1].results["ml_off"].filters.items()}
    rows = list(csv.DictReader((tmp_path / "ml_off" / "trades.csv").read_text().splitlines()))
    assert rows
    for row in rows:
        for col in ("entry_price", "exit_price"):
            assert is_multiple(float(row[col]), ticks[row["symbol"]]), row
    text = console.export_text()
    assert f"charts: {png}  {html_path}" in text
    assert "capital: 1,000.00 USDT at the start of every fold's run" in text


def test_walk_forward_chart_job_round_trips_exactly(
    markets4: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    cfg = BacktestConfig(symbols=SYMS, markets={s: markets4[s] for s in SYMS}, use_ml=True)
    wf = run_walk_forward(cfg, loose_config(SYMS), folds=2, lgbm_overrides={"n_estimators": 5}, workers=1)
    chart = walk_forward_chart(wf, "title")
    assert chart.folds == tuple(fold_summary(wf))
    for job in walk_forward_jobs(chart, tmp_path / "w.png", tmp_path / "w.html"):
        back = decode(encode(job))
        assert isinstance(back.data, WalkForwardChart)
        assert (back.kind, back.path, back.data.title, back.data.symbols) == (
            job.kind,
            job.path,
            "title",
            SYMS,
        )
        assert back.data.folds == chart.folds
        for mode, curve in chart.curves.items():
            assert curve.time_ms.size > 0
            assert np.array_equal(back.data.curves[mode].time_ms, curve.time_ms)
            assert np.array_equal(back.data.curves[mode].values, curve.values)
        assert draw(back) == draw(job)  # the worker draws the very same bytes
