"""Orchestration of ``perpbot optimize``: validate everything, open/join the studies, run workers.

Order (bad input never costs a trial): settings → market data and folds of every symbol →
storage connection → create or join each symbol's study (fingerprint check). Only then do
trials start: the local worker loop here, plus ``workers − 1`` child processes, each a
``perpbot optimize … --worker-only`` on the same storage (plain processes, no pickling of state).

Studies: one per symbol, named ``<study>-<SYMBOL>``; the five parameters are the symbol's own.

Samplers and reproducibility:
* ``tpe`` (default): Optuna's TPE, adaptive, with ``constant_liar`` so parallel workers do not
  pile onto the same point. Reproducible with ONE worker on SQLite (seeded); with several
  workers each has its own seed and what it samples depends on which trials finished first, so
  the result varies between runs.
* ``qmc``: the first ``trials`` points of Optuna's scrambled Sobol sequence for ``--seed`` are
  enqueued when the study is created; workers only run queued trials. The evaluated set is a
  pure function of (trials, seed), and the backtest is deterministic, so any number of workers
  — and a killed worker whose trial is retried — gives exactly the one-worker result.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from perpbot.config import AppConfig
from perpbot.data.schema import data_path
from perpbot.errors import ConfigError, DataError
from perpbot.ml.splits import EMBARGO
from perpbot.optimize import space
from perpbot.optimize.scoring import DEFAULT_METRIC, DEFAULT_MIN_TRADES, check_metric
from perpbot.optimize.storage import SQLITE_NAME, create_or_join, data_hash, normalize_url, open_storage
from perpbot.optimize.trial import Evaluator
from perpbot.optimize.worker import work

SAMPLERS = ("tpe", "qmc")
STORAGE_ENV = "PERPBOT_OPTIMIZE_STORAGE"  # --storage's environment variable


@dataclass(frozen=True, slots=True)
class OptimizeSettings:
    """One ``perpbot optimize`` invocation (CLI flags, validated by :meth:`check`)."""

    symbols: tuple[str, ...]
    trials: int = 100
    folds: int = 5
    metric: str = DEFAULT_METRIC
    min_trades: int = DEFAULT_MIN_TRADES
    storage: str | None = None
    study: str = "perpbot-optimize"
    workers: int = 1
    out: Path = Path("optimize_out")
    data_dir: Path = Path("data")
    model_dir: Path = Path("models")
    use_ml: bool = False
    sampler: str = "tpe"
    seed: int = 42
    heartbeat: int = 30
    worker_only: bool = False
    promote_to: Path | None = Path(".env")
    markets: dict[str, pd.DataFrame] | None = field(default=None, compare=False)

    def check(self) -> None:
        if self.trials < 1:
            raise ConfigError(f"--trials {self.trials}: must be >= 1")
        if self.folds < 1:
            raise ConfigError(f"--folds {self.folds}: must be >= 1")
        check_metric(self.metric)
        if self.min_trades < 1:
            raise ConfigError(f"--min-trades {self.min_trades}: must be >= 1")
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: must be >= 1")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if self.heartbeat < 1:
            raise ConfigError(f"--heartbeat {self.heartbeat}: must be >= 1 second")
        if not self.symbols:
            raise ConfigError("optimize: no symbol given")
        if not self.study.strip():
            raise ConfigError("--study: empty name")

    def storage_url(self) -> str:
        if self.storage is None:
            return f"sqlite:///{(self.out / SQLITE_NAME).resolve()}"
        return normalize_url(self.storage)


@dataclass(slots=True, eq=False)
class SymbolJob:
    """One symbol's study and evaluator, ready for trials."""

    symbol: str
    study: optuna.Study
    evaluator: Evaluator
    fingerprint: dict[str, Any]


def load_market(settings: OptimizeSettings, symbol: str) -> pd.DataFrame:
    if settings.markets is not None:
        if symbol not in settings.markets:
            raise DataError(f"optimize: no market frame given for {symbol}")
        return settings.markets[symbol]
    from perpbot.data.store import load_market as load

    path = data_path(settings.data_dir, symbol)
    if not path.is_file():
        raise DataError(
            f"{path}: no market data for {symbol} (fetch it first: perpbot fetch --symbol {symbol})"
        )
    return load(path)


def _config_hash(app: AppConfig, symbol: str) -> str:
    """The settings besides the searched five that change a trial's trades (risk, fees, defaults)."""
    parts = {
        "leverage": app.leverage,
        "max_same_direction": app.max_same_direction,
        "margin": [app.margin_max_ratio, app.margin_min_ratio, app.margin_decay_rate],
        "fees": [app.taker_fee, app.maker_fee, app.slippage_bps],
        "ml": [app.ml_threshold, app.ml_threshold_mode, list(app.ml_backends)],
        "defaults": space.from_signal_params(app.params_for(symbol)),
    }
    return hashlib.sha256(repr(sorted(parts.items())).encode()).hexdigest()[:16]


def fingerprint(
    settings: OptimizeSettings, app: AppConfig, symbol: str, market: pd.DataFrame, model: str | None = None
) -> dict[str, Any]:
    fp: dict[str, Any] = {
        "data": data_hash(market),
        "version": version("perpbot"),
        "symbol": symbol,
        "folds": settings.folds,
        "metric": settings.metric,
        "min_trades": settings.min_trades,
        "embargo_bars": EMBARGO,
        "ml": settings.use_ml,
        "space": space.describe(),
        "sampler": settings.sampler,
        "seed": settings.seed,
        "settings": _config_hash(app, symbol),
    }
    if settings.use_ml:
        fp["model"] = model
    if settings.sampler == "qmc":
        fp["plan_trials"] = settings.trials
    return fp


def study_name(settings: OptimizeSettings, symbol: str) -> str:
    return f"{settings.study}-{symbol}"


def make_sampler(settings: OptimizeSettings, worker_index: int) -> optuna.samplers.BaseSampler:
    """Seeded TPE for the first local worker on SQLite; any other worker draws its own seed."""
    if settings.sampler == "qmc":
        return optuna.samplers.RandomSampler(seed=settings.seed)  # never asked: the plan is enqueued
    if worker_index == 0 and settings.storage is None:
        seed = settings.seed
    else:
        tag = f"{settings.seed}:{socket.gethostname()}:{os.getpid()}:{worker_index}"
        seed = int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def prepare(settings: OptimizeSettings, app: AppConfig, worker_index: int = 0) -> list[SymbolJob]:
    """Every check of the module docstring, in order; returns the joined studies."""
    settings.check()
    loaded = []
    for sym in settings.symbols:
        market = load_market(settings, sym)
        ev = Evaluator.build(
            sym,
            market,
            app,
            folds=settings.folds,
            metric=settings.metric,
            min_trades=settings.min_trades,
            use_ml=settings.use_ml,
            model_dir=settings.model_dir,
        )
        loaded.append((sym, market, ev))
    url = settings.storage_url()
    if settings.storage is None:
        settings.out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(url, settings.heartbeat)
    jobs = []
    for sym, market, ev in loaded:
        fp = fingerprint(settings, app, sym, market, ev.model_sha256)
        plan = space.qmc_plan(settings.trials, settings.seed) if settings.sampler == "qmc" else None
        st = create_or_join(
            storage, study_name(settings, sym), fp, make_sampler(settings, worker_index), plan
        )
        jobs.append(SymbolJob(sym, st, ev, fp))
    return jobs


def worker_argv(settings: OptimizeSettings, index: int) -> list[str]:
    """The command line of local worker ``index`` (same study, same settings, no report)."""
    argv = [
        sys.executable,
        "-m",
        "perpbot.cli.main",
        "optimize",
        "--symbols",
        ",".join(settings.symbols),
        "--trials",
        str(settings.trials),
        "--folds",
        str(settings.folds),
        "--metric",
        settings.metric,
        "--min-trades",
        str(settings.min_trades),
        "--study",
        settings.study,
        "--out",
        str(settings.out),
        "--data-dir",
        str(settings.data_dir),
        "--model-dir",
        str(settings.model_dir),
        "--sampler",
        settings.sampler,
        "--seed",
        str(settings.seed),
        "--heartbeat",
        str(settings.heartbeat),
        "--worker-index",
        str(index),
        "--worker-only",
    ]
    if settings.use_ml:
        argv.append("--ml")
    return argv


def run_workers(settings: OptimizeSettings, jobs: list[SymbolJob], worker_index: int = 0) -> dict[str, int]:
    """This process's loop over the symbols' studies, plus the local child workers; returns the
    number of trials run here per symbol. A child that fails is reported as one line."""
    children = []
    if worker_index == 0 and settings.workers > 1:
        if settings.markets is not None:
            raise ConfigError("--workers > 1 needs market files in --data-dir (child processes read them)")
        # The storage URL goes through the environment: a password on a command line is visible
        # to every local user in `ps`.
        env = {**os.environ, STORAGE_ENV: settings.storage_url()}
        children = [subprocess.Popen(worker_argv(settings, i), env=env) for i in range(1, settings.workers)]
    ran: dict[str, int] = {}
    tag = f"{socket.gethostname()}:{os.getpid()}"
    try:
        for job in jobs:
            ran[job.symbol] = work(
                job.study, job.evaluator, settings.trials, tag, planned=settings.sampler == "qmc"
            )
    except BaseException:
        # Interrupted or failed here: stop the local children too (each queues its running
        # trial again on SIGTERM), rather than leaving them running unattended.
        for c in children:
            if c.poll() is None:
                c.terminate()
        raise
    finally:
        codes = [c.wait() for c in children]
    bad = [c for c in codes if c != 0]
    if bad:
        raise ConfigError(f"{len(bad)} local worker process(es) failed (exit {bad[0]}); see their error line")
    return ran
