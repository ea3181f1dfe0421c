"""Walk-forward folds: each fold's models trained and its two backtests run, in forked workers.

One job: running the folds of a planned walk-forward (``wf_plan`` plans them, ``wf_report``
summarises and writes them; ``walk_forward`` has the protocol).

Why it is laid out this way (issue 13: ``--walk-forward 4`` within 5 s on 2 cores). Measured on
the real data (3 symbols, K = 4): a fold's own work is small, training 0.1-0.6 s for its three
symbols and each backtest 0.1-0.2 s, next to importing what training needs (LightGBM, which
loads scikit-learn and SciPy, onnx and onnxmltools): 1.5-2.4 s of CPU, which every worker used to
pay again. So:

1. The calling process imports that stack once (:func:`preload_fold_libraries`), then forks the
   workers: they inherit it, the markets and every symbol's features (copy-on-write), and import
   or compute none of them again.
2. The work is cut into one task per fold for its training and ML-on run and one per fold for
   its ML-off run (which needs no model), handed out costliest first (later folds train on more
   history), so that both workers finish at about the same time.
3. Training reads no file: a symbol's history is a prefix of the loaded market and its features
   the same prefix of the whole market's features (:func:`train_fold_model`).

Folds share nothing (own models folder, own simulator, journal and risk manager, each seeded), so
the result is identical to running them one after another in this process (``workers=1``), which
the tests check. A task comes back stripped of the inputs the parent already holds (markets,
features, ONNX sessions); the parent loads each fold's filters again from its models folder.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import multiprocessing
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perpbot.backtest.runner import BacktestConfig, BacktestResult, run_backtest
from perpbot.config import AppConfig
from perpbot.errors import InsufficientDataError
from perpbot.ml.decision import EntryFilter

Tick = Callable[[], None]


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
class FoldJob:
    """What every fold needs; inherited by forked workers, never sent to them."""

    base: BacktestConfig  # markets loaded, features computed, journal in memory
    app: AppConfig
    windows: tuple[tuple[int, int], ...]
    tmp: Path
    lgbm_overrides: Mapping[str, Any] | None
    data_files: Mapping[str, Path] = field(default_factory=dict)  # where each market was read from


def shared_features(markets: Mapping[str, pd.DataFrame], app: AppConfig) -> dict[str, dict[str, np.ndarray]]:
    """Each symbol's ``feature_arrays`` on its whole market, computed once for every fold.

    A backtest computes its features on the whole file and then cuts its window out (``runner``),
    and training needs the features of a prefix, which are the whole market's first rows: all 2·K
    runs and K·symbols trainings of a walk-forward would otherwise compute these arrays again."""
    from perpbot.ml.features import feature_arrays

    return {s: feature_arrays(m, app.params_for(s)) for s, m in markets.items()}


def fold_inputs(
    cfg: BacktestConfig, app: AppConfig
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, np.ndarray]]]:
    """Every symbol's market frame (training slices frames) and whole-market features.

    From ``cfg.markets`` when given (features computed here), else each data file through the
    input cache (``prepare.cached_inputs``): a warm entry serves the arrays and the features
    without decoding the parquet file or computing an indicator, as for a plain backtest."""
    if cfg.markets is not None:
        markets = {s: cfg.markets[s] for s in cfg.symbols}
        return markets, dict(cfg.feature_arrays or shared_features(markets, app))
    from perpbot.backtest.prepare import cached_inputs
    from perpbot.data.store import market_frame

    markets, features = {}, {}
    for s in cfg.symbols:
        arrays, features[s] = cached_inputs(s, cfg.data_dir, app.params_for(s))
        markets[s] = market_frame(arrays)
    return markets, features


def train_fold_model(
    symbol: str,
    market: pd.DataFrame,
    test_start_ms: int,
    app_config: AppConfig,
    root: Path,
    *,
    seed: int = 42,
    lgbm_overrides: Mapping[str, Any] | None = None,
    features: Mapping[str, np.ndarray] | None = None,
    data_file: Path | None = None,
) -> FoldModel:
    """Train ``symbol``'s model on its candles before ``test_start_ms`` minus the embargo.

    The truncated history is trained in memory with the production recipe (``train_market``);
    the model lands in ``root/models/<sym>/``. ``features``: the whole market's
    ``feature_arrays`` (features read rows ≤ t only, so their rows before the cut are the
    history's own features, bit for bit), else computed on the history. ``data_file``: where the
    market was read from, recorded in the model's metadata. Returns what happened (never raises
    for too little data).
    """
    from perpbot.ml.splits import EMBARGO
    from perpbot.ml.training import train_market

    times = market.index.as_unit("ms").asi8
    cut = int(np.searchsorted(times, test_start_ms, side="left")) - EMBARGO
    if cut <= 0:
        return FoldModel(symbol, "no model: no candle before the test window", None, None, 0, 0, None)
    history = market.iloc[:cut]
    frame = (
        None
        if features is None
        else pd.DataFrame({k: v[:cut] for k, v in features.items()}, index=history.index, copy=False)
    )
    source = None
    if data_file is not None:
        from perpbot.data.store import data_file_sha256

        source = (data_file, lambda: data_file_sha256(data_file))
    try:
        rep = train_market(
            symbol,
            lambda: history,
            model_dir=root / "models",
            config=app_config,
            backend="lgbm",
            wf=0,
            source=source,
            frame=frame,
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


def fold_filters(
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


def filter_stats(f: EntryFilter) -> dict[str, Any]:
    return {
        "seen": getattr(f, "seen", 0),
        "accepted": getattr(f, "accepted", 0),
        "rejected": getattr(f, "rejected", 0),
        "threshold": getattr(f, "threshold", None) if f.has_model else None,
        "threshold_source": getattr(f, "threshold_source", None) if f.has_model else None,
    }


def fold_window(job: FoldJob, j: int) -> BacktestConfig:
    a, b = job.windows[j - 1]
    return replace(
        job.base,
        start=datetime.fromtimestamp(a / 1000, tz=UTC),
        end=datetime.fromtimestamp(b / 1000, tz=UTC),
    )


OnRun = tuple[dict[str, FoldModel], BacktestResult, dict[str, dict[str, Any]]]


def train_and_trade(job: FoldJob, j: int, tick: Tick | None = None) -> OnRun:
    """Fold ``j`` (1-based): train every symbol's model, then the ML-on run with them."""
    symbols = tuple(job.base.symbols)
    root = job.tmp / f"fold{j}"
    markets = job.base.markets or {}
    models: dict[str, FoldModel] = {}
    for sym in symbols:
        models[sym] = train_fold_model(
            sym,
            markets[sym],
            job.windows[j - 1][0],
            job.app,
            root,
            seed=job.base.seed,
            lgbm_overrides=job.lgbm_overrides,
            features=(job.base.feature_arrays or {}).get(sym),
            data_file=job.data_files.get(sym),
        )
        if tick is not None:
            tick()
    filters = fold_filters(symbols, root, job.app, models)
    on = asyncio.run(run_backtest(replace(fold_window(job, j), use_ml=True, entry_filters=filters), job.app))
    if tick is not None:
        tick()
    return models, on, {s: filter_stats(f) for s, f in filters.items()}


def trade_unfiltered(job: FoldJob, j: int) -> BacktestResult:
    """Fold ``j``'s ML-off run: every rule signal trades (no model needed)."""
    return asyncio.run(run_backtest(replace(fold_window(job, j), use_ml=False), job.app))


def run_fold(job: FoldJob, j: int, tick: Tick | None = None) -> WalkForwardFold:
    """Fold ``j`` whole, in this process: its models and both runs."""
    models, on, stats = train_and_trade(job, j, tick)
    off = trade_unfiltered(job, j)
    if tick is not None:
        tick()
    a, b = job.windows[j - 1]
    return WalkForwardFold(j, a, b, models, {"ml_on": on, "ml_off": off}, stats)


FOLD_MODULES = (
    "perpbot.ml.training",
    "perpbot.ml.lgbm_model",  # LightGBM, scikit-learn, SciPy
    "onnx.checker",
    "onnx.numpy_helper",
    "onnxmltools",
    "onnxmltools.convert.common.data_types",
    "onnxmltools.convert.lightgbm",
    "perpbot.ml.filter",  # onnxruntime
    "perpbot.engine.bot",
    "perpbot.exchange.sim.adapter",
    "perpbot.backtest.agenda",
)
"""What a fold task imports on first use (measured: nothing else is imported during a fold)."""


def preload_fold_libraries() -> None:
    """Import :data:`FOLD_MODULES` here, once, before the workers fork (module docstring, 1.)."""
    for name in FOLD_MODULES:
        importlib.import_module(name)


def can_fork_workers() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def run_folds(job: FoldJob, workers: int, tick: Tick) -> list[WalkForwardFold]:
    """Every fold: in this process when ``workers`` ≤ 1 (or without ``fork``), else in forked
    processes (module docstring). The ML-off runs need no model, so one worker forked before the
    training stack is imported starts them on the core this process leaves idle while importing;
    what it has not started by then goes to the fold workers."""
    k = len(job.windows)
    if workers <= 1 or not can_fork_workers():
        return [run_fold(job, j, tick) for j in range(1, k + 1)]
    ticks = {"on": len(job.base.symbols) + 1, "off": 1}
    done: dict[tuple[str, int], Any] = {}

    def collect(fut: Future[Any], task: tuple[str, int]) -> None:
        done[task] = fut.result()
        for _ in range(ticks[task[0]]):
            tick()

    global _JOB
    _JOB = job
    ctx = multiprocessing.get_context("fork")
    try:
        gc.freeze()  # the workers' collections skip what they inherit (and copy fewer pages)
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as early:
            first = {early.submit(_task, "off", j): ("off", j) for j in range(1, k + 1)}
            preload_fold_libraries()
            early.shutdown(wait=True, cancel_futures=True)
        for fut, task in first.items():  # finished, or cancelled (never waited on: not "notified")
            if not fut.cancelled():
                collect(fut, task)
        tasks = [("on", j) for j in range(k, 0, -1)] + [t for t in first.values() if t not in done]
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_task, *t): t for t in tasks}
            for fut in as_completed(futures):
                collect(fut, futures[fut])
    finally:
        _JOB = None
        gc.unfreeze()
    # Back in the parent: each run's config is the one this process would have built, the ML-on
    # run's with the fold's filters loaded again from its models folder (their decision counts
    # came back in the task's filter statistics).
    out = []
    symbols = tuple(job.base.symbols)
    for j in range(1, k + 1):
        models, on, stats = done["on", j]
        window = fold_window(job, j)
        filters = fold_filters(symbols, job.tmp / f"fold{j}", job.app, models)
        results = {
            "ml_on": replace(on, config=replace(window, use_ml=True, entry_filters=filters)),
            "ml_off": replace(done["off", j], config=replace(window, use_ml=False)),
        }
        out.append(WalkForwardFold(j, *job.windows[j - 1], models, results, stats))
    return out


_JOB: FoldJob | None = None  # set in the parent just before the workers fork


def _light(run: BacktestResult) -> BacktestResult:
    """A run without the parent's inputs (markets, features, ONNX filters): neither needed back
    nor transferable."""
    return replace(run, config=replace(run.config, markets=None, entry_filters=None, feature_arrays=None))


def _task(kind: str, j: int) -> OnRun | BacktestResult:
    """In a forked worker: fold ``j``'s training and ML-on run (``on``) or its ML-off run."""
    assert _JOB is not None
    if kind == "on":
        models, on, stats = train_and_trade(_JOB, j)
        return models, _light(on), stats
    return _light(trade_unfiltered(_JOB, j))
