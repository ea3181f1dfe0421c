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

Folds share nothing (own models folder, own simulator, journal and risk manager, each seeded), so
they run in parallel worker processes, one per core (issue 13); the result is identical to running
them one after another (``workers=1``), which the tests check. Workers are forked after the markets
are loaded, so each inherits them instead of reloading; a fold comes back as its results, stripped
of the inputs the parent already holds (markets, ONNX sessions).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from perpbot.backtest.metrics import Metrics, MetricsReport, summarize
from perpbot.backtest.report import (
    HONESTY_NOTE,
    ReportFiles,
    atomic_write_bytes,
    equity_chart_jobs,
    format_number,
    report_files,
    write_tables,
)
from perpbot.backtest.runner import (
    BacktestConfig,
    BacktestResult,
    check_inputs,
    forward_fill,
    iso_minute,
    load_markets,
    run_backtest,
    window_slice,
)
from perpbot.config import AppConfig
from perpbot.data.schema import BAR_MS
from perpbot.domain.types import ClosedTrade
from perpbot.errors import ConfigError, InsufficientDataError
from perpbot.fileio import jsonable
from perpbot.ml.decision import EntryFilter

ProgressFn = Callable[[int, int], None]
MODES = ("ml_on", "ml_off")


@dataclass(frozen=True, slots=True)
class FoldModel:
    """What a fold's ML-on run used for one symbol."""

    symbol: str
    status: str  # "trained" or "no model: <reason>"
    train_first_ms: int | None
    train_last_ms: int | None  # open time of the last candle given to training
    samples: int
    signals: int
    threshold: float | None


@dataclass(frozen=True, slots=True)
class WalkForwardFold:
    index: int  # 1..K
    test_start_ms: int
    test_end_ms: int  # exclusive (open time)
    models: dict[str, FoldModel]
    results: dict[str, BacktestResult]  # mode → run
    # ML-on filter decisions per symbol: signals seen / accepted / rejected, threshold and source.
    filter_stats: dict[str, dict[str, Any]] = field(default_factory=dict)


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

    def document(self) -> dict[str, Any]:
        """What ``walk_forward.json`` holds."""

        def mrow(m: Metrics) -> dict[str, Any]:
            return {
                "trades": m.trades,
                "win_rate": m.win_rate,
                "profit_factor": m.profit_factor,
                "net_pnl": m.net_pnl,
                "fees": m.fees,
                "max_drawdown_pct": m.max_drawdown_pct,
                "sharpe": m.sharpe,
            }

        return jsonable(
            {
                "symbols": list(self.symbols),
                "folds_requested": self.k,
                "protocol": {
                    "blocks": f"{self.k + 1} equal chronological blocks of the union timeline; "
                    "block 0 trains only, blocks 1..K are tested",
                    "training": "per symbol, all candles before the test window minus 24 embargo bars; "
                    "the dataset drops the last 24 label bars; LightGBM, default parameters",
                    "balance": "each fold's runs start from the initial balance",
                },
                "folds": [
                    {
                        "fold": f.index,
                        "test_start": iso_minute(f.test_start_ms),
                        "test_end": iso_minute(f.test_end_ms),
                        "models": {
                            s: {
                                "status": m.status,
                                "train_first": None
                                if m.train_first_ms is None
                                else iso_minute(m.train_first_ms),
                                "train_last": None
                                if m.train_last_ms is None
                                else iso_minute(m.train_last_ms),
                                "samples": m.samples,
                                "signals": m.signals,
                                "threshold": m.threshold,
                                "filter": f.filter_stats.get(s),
                            }
                            for s, m in f.models.items()
                        },
                        **{
                            mode: {
                                "fingerprint": r.fingerprint,
                                "portfolio": mrow(r.metrics.portfolio),
                                "per_symbol": {s: mrow(x) for s, x in r.metrics.per_symbol.items()},
                                "notes": r.notes(),
                            }
                            for mode, r in f.results.items()
                        },
                    }
                    for f in self.folds
                ],
                "total": {mode: rep.as_dict() for mode, rep in self.metrics.items()},
                "honesty_note": HONESTY_NOTE,
            }
        )


def _window(times: np.ndarray, start_ms: int | None, end_ms: int | None) -> np.ndarray:
    return times[window_slice(times, start_ms, end_ms)]


def fold_windows(
    markets: Mapping[str, pd.DataFrame], k: int, start_ms: int | None, end_ms: int | None
) -> list[tuple[int, int]]:
    """The K test windows ``[start, end)`` (open times): blocks 1..K of K+1 equal blocks."""
    if k < 1:
        raise ConfigError(f"--walk-forward={k}: need at least 1 fold")
    times = np.unique(
        np.concatenate([_window(m.index.as_unit("ms").asi8, start_ms, end_ms) for m in markets.values()])
    )
    n = times.size
    if n < (k + 1) * 2:
        raise InsufficientDataError(f"walk-forward: {n} candles cannot make {k + 1} blocks")
    edges = [round(j * n / (k + 1)) for j in range(k + 2)]
    out: list[tuple[int, int]] = []
    for j in range(1, k + 1):
        a, b = edges[j], edges[j + 1]
        end = int(times[b]) if b < n else int(times[-1]) + BAR_MS
        out.append((int(times[a]), end))
    return out


MIN_FOLD_BARS = 96  # one day of 15-minute candles per symbol in every test window


def check_fold_windows(
    markets: Mapping[str, pd.DataFrame], k: int, start_ms: int | None, end_ms: int | None
) -> list[tuple[int, int]]:
    """The K test windows, or one ``ConfigError`` naming the smallest fold — before any training.

    Too many folds used to fail after minutes of training with "no candle inside the backtest
    window". Here every block (each test window and the training-only block before the first one)
    must hold at least :data:`MIN_FOLD_BARS` candles of some symbol; the message names the block with
    the fewest and the largest K the data allows. A symbol listed later than the others is allowed:
    a block before its listing simply trains no model for it (the report says so per fold).
    """

    def smallest(kk: int) -> tuple[int, str, int, int, int] | None:
        try:
            windows = fold_windows(markets, kk, start_ms, end_ms)
        except InsufficientDataError:
            return (0, next(iter(markets)), 0, 0, 0)
        first = windows[0][0]
        blocks = [
            (0, start_ms if start_ms is not None else -(2**62), first),
            *[(j, a, b) for j, (a, b) in enumerate(windows, start=1)],
        ]
        worst: tuple[int, str, int, int, int] | None = None
        for j, a, b in blocks:
            counts = []
            for sym, m in markets.items():
                times = m.index.as_unit("ms").asi8
                n = int(np.searchsorted(times, b, side="left") - np.searchsorted(times, a, side="left"))
                counts.append((n, sym))
            n, sym = max(counts, key=lambda c: c[0])  # the best-covered symbol of this block
            if worst is None or n < worst[0]:
                worst = (n, sym, j, a, b)
        return worst

    worst = smallest(k)
    if worst is not None and worst[0] >= MIN_FOLD_BARS:
        return fold_windows(markets, k, start_ms, end_ms)
    feasible = next((kk for kk in range(k - 1, 0, -1) if (w := smallest(kk)) and w[0] >= MIN_FOLD_BARS), 0)
    hint = f"use --walk-forward {feasible} or fewer" if feasible else "the data is too short for any fold"
    if worst is None or worst[4] == worst[3] == 0:
        raise ConfigError(f"--walk-forward={k}: the window has too few candles for {k + 1} blocks; {hint}")
    n, sym, j, a, b = worst
    what = "the training block before fold 1" if j == 0 else f"fold {j} ({_day(a)} → {_day(b)})"
    raise ConfigError(
        f"--walk-forward={k}: {what} holds at most {n} candles of {sym}, fewer than {MIN_FOLD_BARS} "
        f"(one day) needed in every block; {hint}"
    )


def train_fold_model(
    symbol: str,
    market: pd.DataFrame,
    test_start_ms: int,
    app_config: AppConfig,
    root: Path,
    *,
    seed: int = 42,
    lgbm_overrides: Mapping[str, Any] | None = None,
) -> FoldModel:
    """Train ``symbol``'s model on its candles before ``test_start_ms`` minus the embargo.

    The truncated history is written to ``root`` and trained with the production recipe; the
    model lands in ``root/models/<sym>/``. Returns what happened (never raises for too little data).
    """
    from perpbot.data.store import save_market
    from perpbot.ml.splits import EMBARGO
    from perpbot.ml.training import train_symbol

    times = market.index.as_unit("ms").asi8
    cut = int(np.searchsorted(times, test_start_ms, side="left")) - EMBARGO
    if cut <= 0:
        return FoldModel(symbol, "no model: no candle before the test window", None, None, 0, 0, None)
    history = market.iloc[:cut]
    data_file = root / "data" / symbol.lower() / "combined_15m.parquet"
    save_market(history, data_file, closed_through_ms=int(times[cut - 1]))
    try:
        rep = train_symbol(
            symbol,
            data_dir=root / "data",
            model_dir=root / "models",
            config=app_config,
            backend="lgbm",
            wf=0,
            data_file=data_file,
            lgbm_overrides=lgbm_overrides,
            seed=seed,
        )
    except InsufficientDataError as exc:
        return FoldModel(symbol, f"no model: {exc}", int(times[0]), int(times[cut - 1]), 0, 0, None)
    return FoldModel(
        symbol,
        "trained",
        int(times[0]),
        int(times[cut - 1]),
        int(rep.counts.get("samples", 0)),
        int(rep.counts.get("signals", 0)),
        float(rep.threshold),
    )


def _fold_filters(
    symbols: tuple[str, ...], root: Path, app_config: AppConfig, models: Mapping[str, FoldModel]
) -> dict[str, EntryFilter]:
    """The fold's filters. A model the fold trained must load (else one-line ``ModelError``: an
    ML-on run must never silently trade without its model). ``allow_ungated``: fold models are
    trained without an inner walk-forward (``wf=0``), so they carry no gate verdict of their own —
    the walk-forward itself is their out-of-sample evaluation."""
    from perpbot.data.schema import model_dir
    from perpbot.errors import ModelError
    from perpbot.ml.filter import MLFilter

    out: dict[str, EntryFilter] = {}
    for s in symbols:
        f = MLFilter(
            model_dir(root / "models", s),
            backends=("lgbm",),
            threshold=app_config.ml_threshold,
            threshold_mode=app_config.ml_threshold_mode,
            hot_reload=False,
            allow_ungated=True,
        )
        if models[s].status == "trained" and not f.has_model:
            raise ModelError(f"walk-forward {root.name}: {s}: {f.unavailable_reason}")
        out[s] = f
    return out


def _filter_stats(f: EntryFilter) -> dict[str, Any]:
    return {
        "seen": getattr(f, "seen", 0),
        "accepted": getattr(f, "accepted", 0),
        "rejected": getattr(f, "rejected", 0),
        "threshold": getattr(f, "threshold", None) if f.has_model else None,
        "threshold_source": getattr(f, "threshold_source", None) if f.has_model else None,
    }


def filter_summary(result: WalkForwardResult) -> list[str]:
    """Per symbol over all folds: what the ML-on filters saw and decided (issue 11 §2)."""
    out: list[str] = []
    for sym in result.symbols:
        rows = [f.filter_stats[sym] for f in result.folds if sym in f.filter_stats]
        seen, acc, rej = (sum(int(r[k]) for r in rows) for k in ("seen", "accepted", "rejected"))
        thr = [f"{r['threshold']:.3f} ({r['threshold_source']})" for r in rows if r["threshold"] is not None]
        out.append(
            f"{sym} ML on: {seen} signals seen by the filter, {acc} accepted, {rej} rejected; "
            f"thresholds per fold with a model: {', '.join(thr) or 'none'}"
        )
    return out


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
    markets = load_markets(cfg)
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
        feature_arrays=cfg.feature_arrays or shared_features(markets, app),
    )
    with tempfile.TemporaryDirectory(prefix="perpbot-wf-") as tmp:
        job = _FoldJob(base, app, tuple(windows), Path(tmp), lgbm_overrides)
        n_workers = min(len(windows), workers if workers is not None else (os.cpu_count() or 1))
        if n_workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            fold_results = [_run_fold(job, j, tick) for j in range(1, len(windows) + 1)]
        else:
            idle = preload_chart_libraries if out_dir is not None else None
            fold_results = _run_folds_parallel(job, n_workers, tick, len(symbols) + 2, idle)

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
    result = WalkForwardResult(symbols, folds, fold_results, trades, reports)
    if out_dir is not None:
        result = write_walk_forward(result, Path(out_dir), cfg)
    return result


def shared_features(markets: Mapping[str, pd.DataFrame], app: AppConfig) -> dict[str, dict[str, np.ndarray]]:
    """Each symbol's ``feature_arrays`` on its whole market, computed once for every fold run.

    A backtest computes its features on the whole file and then cuts its window out (``runner``),
    so all 2·K runs of a walk-forward would compute exactly these arrays again (same markets, same
    parameters). Computed here, before the workers fork, they are inherited by every fold."""
    from perpbot.ml.features import feature_arrays

    return {s: feature_arrays(m, app.params_for(s)) for s, m in markets.items()}


@dataclass(frozen=True, slots=True)
class _FoldJob:
    """What every fold needs; inherited by forked workers, never sent to them."""

    base: BacktestConfig  # markets loaded, journal in memory
    app: AppConfig
    windows: tuple[tuple[int, int], ...]
    tmp: Path
    lgbm_overrides: Mapping[str, Any] | None


def _fold_window(job: _FoldJob, j: int) -> BacktestConfig:
    a, b = job.windows[j - 1]
    return replace(
        job.base,
        start=datetime.fromtimestamp(a / 1000, tz=UTC),
        end=datetime.fromtimestamp(b / 1000, tz=UTC),
    )


def _run_fold(job: _FoldJob, j: int, tick: Callable[[], None] | None = None) -> WalkForwardFold:
    """Fold ``j`` (1-based): train every symbol's model, then the ML-on and ML-off runs."""
    a, b = job.windows[j - 1]
    symbols = tuple(job.base.symbols)
    root = job.tmp / f"fold{j}"
    models: dict[str, FoldModel] = {}
    markets = job.base.markets or {}
    for sym in symbols:
        models[sym] = train_fold_model(
            sym, markets[sym], a, job.app, root, seed=job.base.seed, lgbm_overrides=job.lgbm_overrides
        )
        if tick is not None:
            tick()
    window = _fold_window(job, j)
    filters = _fold_filters(symbols, root, job.app, models)
    on = asyncio.run(run_backtest(replace(window, use_ml=True, entry_filters=filters), job.app))
    if tick is not None:
        tick()
    off = asyncio.run(run_backtest(replace(window, use_ml=False), job.app))
    if tick is not None:
        tick()
    stats = {s: _filter_stats(f) for s, f in filters.items()}
    return WalkForwardFold(j, a, b, models, {"ml_on": on, "ml_off": off}, stats)


_JOB: _FoldJob | None = None  # set in the parent just before the workers fork


def _worker_fold(j: int) -> WalkForwardFold:
    """In a forked worker: run fold ``j`` and return it without the parent's inputs (the markets
    and the ONNX filters are neither needed back nor transferable)."""
    assert _JOB is not None
    fold = _run_fold(_JOB, j)
    light = {
        m: replace(r, config=replace(r.config, markets=None, entry_filters=None, feature_arrays=None))
        for m, r in fold.results.items()
    }
    return replace(fold, results=light)


def preload_chart_libraries() -> None:
    """Import what the reports' charts draw with (matplotlib's Agg figure, plotly's writer).

    Why (issue 13, walk-forward within 5 s): the parent only waits while the fold workers run,
    then draws six charts in this process, the first paying ~0.4 s of imports on the critical
    path. Imported while the folds run, that CPU overlaps them (a core idles at their tail)."""
    import importlib

    for name in ("matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.dates", "plotly.io"):
        importlib.import_module(name)


def _run_folds_parallel(
    job: _FoldJob,
    n_workers: int,
    tick: Callable[[], None],
    ticks_per_fold: int,
    idle: Callable[[], None] | None = None,
) -> list[WalkForwardFold]:
    """Every fold in ``n_workers`` forked processes; ``idle`` runs in this process once they are
    forked (nothing it imports reaches them), while they work."""
    global _JOB
    _JOB = job
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            futures = {pool.submit(_worker_fold, j): j for j in range(1, len(job.windows) + 1)}
            if idle is not None:
                idle()
            done: dict[int, WalkForwardFold] = {}
            for fut in as_completed(futures):
                done[futures[fut]] = fut.result()
                for _ in range(ticks_per_fold):
                    tick()
    finally:
        _JOB = None
    # Back in the parent: each run's config is the one this process would have built, the ML-on
    # run's with the fold's filters loaded again from its models folder (their decision counts
    # came back in ``filter_stats``).
    out = []
    symbols = tuple(job.base.symbols)
    for j in sorted(done):
        fold = done[j]
        window = _fold_window(job, j)
        filters = _fold_filters(symbols, job.tmp / f"fold{j}", job.app, fold.models)
        results = {
            m: replace(
                r,
                config=replace(
                    window, use_ml=r.config.use_ml, entry_filters=filters if r.config.use_ml else None
                ),
            )
            for m, r in fold.results.items()
        }
        out.append(replace(fold, results=results))
    return out


def _closes_on(run: BacktestResult, symbol: str, close_times: np.ndarray) -> np.ndarray:
    """A run's aligned closes of ``symbol`` on ``close_times`` (both modes share the timeline)."""
    if np.array_equal(run.close_time_ms, close_times):
        return run.closes[symbol]
    return forward_fill(run.close_time_ms, run.closes[symbol], close_times)


def write_walk_forward(result: WalkForwardResult, out: Path, cfg: BacktestConfig) -> WalkForwardResult:
    """``<out>/walk_forward.json`` plus the standard report of each mode in ``<out>/<mode>/``."""
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, ReportFiles] = {}
    jobs = []
    for mode in MODES:
        params = {
            "mode": mode,
            "walk_forward_folds": result.k,
            "symbols": list(result.symbols),
            "initial_balance": cfg.initial_balance,
            "test_windows": [[iso_minute(f.test_start_ms), iso_minute(f.test_end_ms)] for f in result.folds],
            "note": "out-of-sample trades of every fold, concatenated",
        }
        title = f"perpbot walk-forward K={result.k} ({mode.replace('_', ' ')}) {','.join(result.symbols)}"
        ticks = {s: f.tick_size for fold in result.folds for s, f in fold.results[mode].filters.items()}
        files[mode] = report_files(out / mode)  # what ``write_report`` writes, charts as jobs
        write_tables(files[mode], result.trades[mode], result.metrics[mode], params, ticks)
        jobs += equity_chart_jobs(files[mode], result.metrics[mode], title)
    path = out / "walk_forward.json"
    atomic_write_bytes(
        path, (json.dumps(result.document(), indent=2, allow_nan=False) + "\n").encode("utf-8")
    )
    from perpbot.backtest.chart_pool import ChartPool
    from perpbot.backtest.wf_chart import walk_forward_html, walk_forward_png

    title = f"perpbot walk-forward K={result.k} {','.join(result.symbols)}: ML on vs off, out of sample"
    charts = (out / "walk_forward.png", out / "walk_forward.html")
    # Both modes' equity charts in a forked chart worker (and its child on a second core), warm:
    # this process has the plotting libraries loaded (``preload_chart_libraries``) when it forks;
    # meanwhile it draws the fold charts itself (issue 13, walk-forward within 5 s). Without a
    # second core or a safe fork, the pool draws them here, the same bytes.
    with ChartPool.start() as pool:
        pool.send(jobs)
        atomic_write_bytes(charts[0], walk_forward_png(result, title))
        atomic_write_bytes(charts[1], walk_forward_html(result, title).encode("utf-8"))
        pool.finish()
    return replace(result, out_dir=out, files=files, summary_path=path, charts=charts)


def walk_forward_table(result: WalkForwardResult) -> Table:
    """Folds × (ML on | ML off): trades, profit factor, net PnL; a total row. Fits 80 columns."""
    t = Table(
        title=f"Walk-forward, {result.k} out-of-sample folds: ML filter ON vs OFF, same windows (UTC)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    t.add_column("fold", no_wrap=True)
    t.add_column("test\nfrom", no_wrap=True)
    t.add_column("\nto", no_wrap=True)
    t.add_column("mo-\ndels", justify="right", no_wrap=True)
    for mode in ("ON", "OFF"):
        t.add_column(f"{mode}\ntrades", justify="right", no_wrap=True)
        t.add_column(f"{mode}\nPF", justify="right", no_wrap=True)
        t.add_column(f"{mode}\nnet", justify="right", no_wrap=True)
    for f in result.folds:
        trained = sum(1 for m in f.models.values() if m.status == "trained")
        cells = [str(f.index), _day(f.test_start_ms), _day(f.test_end_ms), f"{trained}/{len(f.models)}"]
        for mode in MODES:
            p = f.results[mode].metrics.portfolio
            cells += [
                str(p.trades),
                format_number(p.profit_factor, "{:.2f}"),
                format_number(p.net_pnl, "{:.2f}"),
            ]
        t.add_row(*cells)
    t.add_section()
    cells = ["all", _day(result.folds[0].test_start_ms), _day(result.folds[-1].test_end_ms), ""]
    for mode in MODES:
        p = result.metrics[mode].portfolio
        cells += [str(p.trades), format_number(p.profit_factor, "{:.2f}"), format_number(p.net_pnl, "{:.2f}")]
    t.add_row(*cells, style="bold")
    return t


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%y-%m-%d")


def walk_forward_renderable(result: WalkForwardResult) -> Group:
    parts: list[Any] = [walk_forward_table(result)]
    start = result.metrics["ml_off"].portfolio.start_equity
    parts.append(
        Text(f"capital: {start:,.2f} USDT at the start of every fold's run, ML on and off alike; PnL in USDT")
    )
    for mode, label in zip(MODES, ("ON ", "OFF"), strict=True):
        parts.append(Text(f"{label} fingerprint {result.metrics[mode].fingerprint}", style="dim"))
    untrained = [
        f"fold {f.index} {s}: {m.status}"
        for f in result.folds
        for s, m in f.models.items()
        if m.status != "trained"
    ]
    for line in untrained:
        parts.append(Text(line, style="yellow"))
    for line in filter_summary(result):
        parts.append(Text(line))
    if result.summary_path is not None:
        parts.append(
            Text(f"report: {result.summary_path}  {result.out_dir}/ml_on/  {result.out_dir}/ml_off/")
        )
    if result.charts:
        parts.append(Text("charts: " + "  ".join(str(p) for p in result.charts)))
    parts.append(Text(HONESTY_NOTE, style="yellow"))
    return Group(*parts)
