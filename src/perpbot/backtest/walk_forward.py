"""Walk-forward backtest: retrain on each purged training window, trade only the next window.

Why: SPEC §13 row 26 — in-sample figures of this design were overfit (a sweep's PF 2.83 became
0.09 out of sample), and a model trained on the whole history then backtested over that same
history is graded on the answers it was trained on. The only evidence worth reporting is
out-of-sample, and the ML filter must be compared with no filter on the very same windows.

Protocol (``--walk-forward K``):

1. The run's span (``--from``/``--to``, else all data) is the union timeline of the symbols'
   candle open times, cut into ``K + 1`` chronological blocks with equal numbers of open times.
   Block 0 is only ever training data; blocks 1…K are the out-of-sample test windows (the same
   windows for every symbol, so each fold is one portfolio backtest with the shared risk manager).
2. Fold ``f`` (test window = block ``f``): each symbol's model is retrained on that symbol's
   candles *strictly before* the test window minus ``EMBARGO`` (24) bars. The dataset builder
   drops the last ``LOOKAHEAD`` (24) bars of what it is given (their labels would need later
   bars), so the last training sample's label window ends 25 bars before the first test candle:
   ``first test bar > last sample + lookahead + embargo``, as in ``perpbot.ml.splits``. All of the
   symbol's history before that cut is used, including candles before ``--from``.
   Training is the production recipe (``perpbot.ml.training.train_symbol``: dataset, balancing,
   purged early-stopping tail, operating threshold, ONNX export) run on the truncated history,
   with the LightGBM backend and its built-in default parameters — never tuned parameters, which
   may have been chosen on the very windows tested here. Models live in a temporary folder that
   is deleted afterwards, never in the user's ``models/``.
3. Each fold is backtested twice over its test window — ML on (the fold's models through the
   ONNX ``MLFilter``) and ML off (every rule signal) — each starting from the initial balance,
   positions closed at the window's end (END_OF_DATA). A symbol whose training window is too
   small to train (``InsufficientDataError``) trades without a filter in that fold's ML-on run;
   the report says so.
4. Per mode, the out-of-sample trades of all folds are concatenated and summarised on the
   contiguous span of the test windows (metrics, equity curve, fingerprint); that equity curve is
   the initial balance plus the cumulative net PnL of every fold (each fold sized its positions
   from its own fresh balance, and its kill switches and daily limit started clear). Each mode
   also gets the standard report files in ``<out>/ml_on/`` and ``<out>/ml_off/``; the
   side-by-side summary is ``<out>/walk_forward.json``.

Folds share nothing, so they run in forked worker processes, one per core (issue 13), with the
same result as one after another (``workers=1``); ``wf_folds`` says how the work is laid out.
While this process imports the training libraries before forking them, the report's chart worker
(``chart_pool``), forked just before, imports and warms up the plotting libraries on the other
core; it draws every chart once the folds are summarised.

Modules, one job each: ``wf_plan`` (the test windows), ``wf_folds`` (training and running the
folds), ``wf_report`` (``walk_forward.json``, the report files, charts and table), this one (the
protocol end to end: :func:`run_walk_forward`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from perpbot.backtest.metrics import MetricsReport, summarize
from perpbot.backtest.report import ReportFiles
from perpbot.backtest.runner import BacktestConfig, BacktestResult, check_inputs, forward_fill
from perpbot.backtest.wf_folds import (
    FoldJob,
    FoldModel,
    WalkForwardFold,
    can_fork_workers,
    fold_inputs,
    run_folds,
    train_fold_model,
)
from perpbot.backtest.wf_plan import MIN_FOLD_BARS, check_fold_windows, fold_windows
from perpbot.backtest.wf_report import MODES, document, walk_forward_renderable, write_walk_forward
from perpbot.config import AppConfig
from perpbot.data.schema import data_path
from perpbot.domain.types import ClosedTrade

__all__ = [
    "MIN_FOLD_BARS",
    "MODES",
    "FoldModel",
    "WalkForwardFold",
    "WalkForwardResult",
    "check_fold_windows",
    "document",
    "fold_windows",
    "run_walk_forward",
    "train_fold_model",
    "walk_forward_renderable",
    "write_walk_forward",
]

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class WalkForwardResult:
    symbols: tuple[str, ...]
    k: int
    folds: list[WalkForwardFold]
    trades: dict[str, list[ClosedTrade]]  # mode → all out-of-sample trades
    metrics: dict[str, MetricsReport]  # mode → summary over the concatenated test windows
    out_dir: Path | None = None
    files: dict[str, ReportFiles] = field(default_factory=dict)
    summary_path: Path | None = None
    charts: tuple[Path, ...] = ()  # walk_forward.png / .html (folds and their models)


def run_walk_forward(
    cfg: BacktestConfig,
    app_config: AppConfig,
    *,
    folds: int,
    out_dir: Path | None = None,
    progress: ProgressFn | None = None,
    lgbm_overrides: Mapping[str, Any] | None = None,
    workers: int | None = None,
) -> WalkForwardResult:
    """Run the protocol of the module docstring; write the reports when ``out_dir`` is given.

    Synchronous (each backtest runs in its own ``asyncio.run``): call it from plain code, not
    from inside a running event loop. ``lgbm_overrides`` shrink training for tests/benches.
    ``workers``: fold processes (None: one per core, at most one per fold; 1: in this process).
    """
    check_inputs(cfg)
    symbols = tuple(cfg.symbols)
    app = app_config.with_symbols(list(symbols))
    markets, features = fold_inputs(cfg, app)
    windows = check_fold_windows(markets, folds, cfg.start_ms, cfg.end_ms)
    total = len(windows) * (len(symbols) + 2)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    base = replace(
        cfg,
        markets=markets,
        journal_path=":memory:",
        entry_filters=None,
        feature_arrays=features,
    )
    n_workers = min(len(windows), workers if workers is not None else (os.cpu_count() or 1))
    pool = None
    if out_dir is not None:
        from perpbot.backtest.chart_pool import ChartPool

        # Forked now, before this process imports the training libraries (``wf_folds``) and
        # before the fold pool's thread exists: it warms up on the other core meanwhile.
        pool = ChartPool.start()
    try:
        with tempfile.TemporaryDirectory(prefix="perpbot-wf-") as tmp:
            files = {} if cfg.markets is not None else {s: data_path(cfg.data_dir, s) for s in symbols}
            job = FoldJob(base, app, tuple(windows), Path(tmp), lgbm_overrides, files)
            fold_results = run_folds(job, n_workers if can_fork_workers() else 1, tick)
        result = _summarised(cfg, symbols, folds, windows, fold_results)
        if out_dir is not None:
            result = write_walk_forward(result, Path(out_dir), cfg, pool)
    finally:
        if pool is not None:
            pool.close()
    return result


def _summarised(
    cfg: BacktestConfig,
    symbols: tuple[str, ...],
    k: int,
    windows: list[tuple[int, int]],
    fold_results: list[WalkForwardFold],
) -> WalkForwardResult:
    """Per mode, the trades of every fold concatenated and summarised on the test windows' span
    (the ML-off runs' timeline: both modes trade the same candles)."""
    trades: dict[str, list[ClosedTrade]] = {}
    reports: dict[str, MetricsReport] = {}
    close_times = np.concatenate([f.results["ml_off"].close_time_ms for f in fold_results])
    for mode in MODES:
        runs = [f.results[mode] for f in fold_results]
        all_trades = [t for r in runs for t in r.trades]
        closes = {
            s: np.concatenate(
                [
                    _closes_on(r, s, f.results["ml_off"].close_time_ms)
                    for r, f in zip(runs, fold_results, strict=True)
                ]
            )
            for s in symbols
        }
        trades[mode] = all_trades
        reports[mode] = summarize(
            all_trades,
            symbols,
            close_times,
            closes,
            cfg.initial_balance,
            start_ms=windows[0][0],
            end_ms=int(close_times[-1]),
        )
    return WalkForwardResult(symbols, k, fold_results, trades, reports)


def _closes_on(run: BacktestResult, symbol: str, close_times: np.ndarray) -> np.ndarray:
    """A run's aligned closes of ``symbol`` on ``close_times`` (both modes share the timeline)."""
    if np.array_equal(run.close_time_ms, close_times):
        return run.closes[symbol]
    return forward_fill(run.close_time_ms, run.closes[symbol], close_times)
