"""``perpbot demo``: the README's main job, offline and without keys.

It strings the real commands together on the embedded default market so that a new user sees the
whole pipeline once: data (recorded if present, else a deterministic synthetic market) → purged
walk-forward training per symbol next to the no-ML baseline → one multi-symbol backtest through
the real bots, with the ML filter on and off side by side. Nothing here is demo-only logic; it
calls the same functions as ``synth``, ``train`` and ``backtest``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from perpbot.cli.common import (
    AllOpt,
    DataDirOpt,
    QuietOpt,
    SymbolOpt,
    SymbolsOpt,
    config_from_env,
    console,
    existing_folder,
    note_synthetic,
    progress,
    select_symbols,
    user_errors,
    writable_folder,
)
from perpbot.data.schema import data_path
from perpbot.errors import ConfigError, InsufficientDataError
from perpbot.fileio import relocate, staged_folder

if TYPE_CHECKING:  # heavy modules load when the command runs, not for --help
    from perpbot.config import AppConfig

OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the demo's data, models and reports.")]
DEMO_CAPITAL = 1000.0  # USDT, the backtests' starting balance (stated in the output)


def _prepare_data(
    cfg: AppConfig, data_dir: Path, out: Path, days: int, seed: int, quiet: bool, shown_out: Path
) -> Path:
    """Use ``data_dir`` when it holds every symbol's file; otherwise synthesize all of them."""
    from perpbot.data.store import save_market
    from perpbot.data.synth import synth_market

    if all(data_path(data_dir, s).is_file() for s in cfg.symbols):
        synthetic = note_synthetic(data_dir, cfg.symbols)
        kind = (
            "synthetic" if len(synthetic) == len(cfg.symbols) else "recorded" if not synthetic else "existing"
        )
        console.print(f"[bold]data[/]: {kind} files in {data_dir}/")
        return data_dir
    synth_dir = out / "data"
    console.print(
        f"[bold]data[/]: no recorded market in {data_dir}/ for {', '.join(cfg.symbols)}; "
        f"generating a deterministic synthetic market ({days} days, seed {seed}) in {shown_out / 'data'}/"
    )
    with progress(quiet) as bar:
        task = bar.add_task("synth", total=len(cfg.symbols))
        for symbol in cfg.symbols:
            frame = synth_market(days=days, seed=seed, symbol=symbol)
            last_open_ms = int(frame.index[-1].value // 1_000_000)
            save_market(
                frame,
                data_path(synth_dir, symbol),
                closed_through_ms=last_open_ms,
                synthetic=f"perpbot demo, seed {seed}, {days} days",
            )
            bar.advance(task)
    return synth_dir


def _check_trainable(cfg: AppConfig, data_dir: Path, days: int, synthetic: bool) -> None:
    """Refuse, before any training, a market too short to train every symbol's filter.

    Training needs ``MIN_SAMPLES`` dataset rows (signals plus their HOLD negatives); how many days
    give that depends on the rule parameters and the market, so it is measured on the data itself
    (the first step of training, without the training) and the message says how many days would do.
    """
    from perpbot.data.store import load_market
    from perpbot.ml.dataset import MIN_SAMPLES, build_dataset
    from perpbot.ml.training import NEGATIVE_RATIO

    for symbol in cfg.symbols:
        market = load_market(data_path(data_dir, symbol))
        params = cfg.params_for(symbol)
        try:
            n = len(build_dataset(market, params, negative_ratio=NEGATIVE_RATIO, decay=0.0, min_samples=0))
        except InsufficientDataError:
            n = 0
        if n >= MIN_SAMPLES:
            continue
        where = f"--days={days}" if synthetic else f"{data_path(data_dir, symbol)}"
        need = f"about {int(days * MIN_SAMPLES / n * 1.5) + 1} days" if n else "many more days"
        raise ConfigError(
            f"{where}: too short to train {symbol}'s filter: {n} training samples, need {MIN_SAMPLES}; "
            f"with these rule parameters the demo needs {need}"
        )


def _train_all(
    cfg: AppConfig,
    data_dir: Path,
    model_dir: Path,
    backends: list[str],
    wf: int,
    quiet: bool,
    shown_models: Path,
) -> None:
    from perpbot.cli.train_cmds import print_train_report, progress_callback
    from perpbot.ml.training import train_symbol

    for symbol in cfg.symbols:
        for backend in backends:
            with progress(quiet) as bar:
                report = train_symbol(
                    symbol,
                    data_dir=data_dir,
                    model_dir=model_dir,
                    config=cfg,
                    backend=backend,
                    wf=wf,
                    progress=progress_callback(bar),
                )
            report.model_dir = relocate(report.model_dir, model_dir, shown_models)
            print_train_report(report)


def _backtest(cfg: AppConfig, data_dir: Path, out: Path, folds: int, quiet: bool, shown_out: Path) -> None:
    """The rule strategy over the whole market, then ML on vs off strictly out of sample.

    The full-period run is ML-off on purpose: the demo's models were trained on this very market,
    so an ML-on run over it would grade the models on their own training data. The ML comparison
    is the walk-forward backtest, which retrains on each purged past window and trades only the
    window after it.
    """
    from perpbot.backtest.runner import BacktestConfig
    from perpbot.cli.backtest_cmd import run_and_print, walk_forward_and_print

    full = BacktestConfig(
        symbols=cfg.symbols,
        data_dir=data_dir,
        model_dir=out / "models",
        use_ml=False,
        initial_balance=DEMO_CAPITAL,
    )
    run_and_print(full, cfg, out / "backtest", quiet=quiet, shown_out=shown_out / "backtest")
    wf = BacktestConfig(
        symbols=cfg.symbols,
        data_dir=data_dir,
        model_dir=out / "models",
        use_ml=True,
        initial_balance=DEMO_CAPITAL,
    )
    shown_wf = shown_out / "walk_forward"
    walk_forward_and_print(wf, cfg, folds, out / "walk_forward", quiet=quiet, shown_out=shown_wf)


PAPER_DAYS = 2  # the demo's paper replay: the market's last days, at full speed


def _paper(
    cfg: AppConfig, data_dir: Path, out: Path, days: int, seed: int, synthetic: bool, shown_out: Path
) -> None:
    """Last step: the live runtime replays the market's last ``PAPER_DAYS`` days against a
    ``perpbot simulate`` child process (ML off, as the full-period backtest), and its fingerprint
    is printed next to the backtest's over the same window (the issue 10 §2 promise)."""
    import asyncio
    import os
    from datetime import UTC, datetime

    import numpy as np
    import pandas as pd

    from perpbot.backtest.runner import BacktestConfig, run_backtest
    from perpbot.data.store import load_market, save_market
    from perpbot.data.synth import synth_market
    from perpbot.exchange.known_filters import derived_filters
    from perpbot.runtime.paper import PaperOptions
    from perpbot.runtime.paper_report import write_paper_report
    from perpbot.runtime.paper_run import run_paper

    corr = cfg.correlation.as_tuple()
    missing = [s for s in corr if not data_path(data_dir, s).is_file()]
    if missing and not synthetic:
        console.print(
            f"[bold]paper[/]: skipped, no {', '.join(missing)} data in {data_dir}/ (the bots need it)"
        )
        return
    for s in missing:  # the demo's own synthetic folder: the correlation symbols' markets too
        frame = synth_market(days=days, seed=seed, symbol=s)
        save_market(frame, data_path(data_dir, s), synthetic=f"perpbot demo, seed {seed}, {days} days")
    last = load_market(data_path(data_dir, cfg.symbols[0])).index[-1]
    start = (last - pd.Timedelta(days=PAPER_DAYS)).strftime("%Y-%m-%d")
    opts = PaperOptions(
        symbols=cfg.symbols, correlation=corr, data_dir=data_dir, from_=start, days=PAPER_DAYS
    )
    folder = out / "paper"
    folder.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]paper[/]: the live runtime over {PAPER_DAYS} replayed days from {start} (ML off) …")
    # A demo never posts to the operator's Discord channel (``perpbot paper`` does, tagged [PAPER]).
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE") and k != "DISCORD_WEBHOOK_URL"}
    res = asyncio.run(run_paper(env, opts, folder / "journal.sqlite3", out / "models", use_ml=False))
    rep = write_paper_report(folder, res, opts, use_ml=False)
    filters = {
        s: derived_filters(s, float(np.nanmedian(load_market(data_path(data_dir, s))["close"])))
        for s in cfg.symbols
    }
    bt = BacktestConfig(
        symbols=cfg.symbols,
        data_dir=data_dir,
        start=datetime.fromtimestamp(res.start_ms / 1000, UTC),
        end=datetime.fromtimestamp(res.end_ms / 1000, UTC),
        use_ml=False,
        initial_balance=DEMO_CAPITAL,
        symbol_filters=filters,
    )
    result = asyncio.run(run_backtest(bt, cfg))
    same = "identical" if result.fingerprint == rep.fingerprint else "DIFFERENT"
    console.print(
        f"[bold]paper[/]: {len(res.trades)} trades over {res.steps} candles "
        f"({res.steps / max(res.wall_s, 1e-9):.1f} candles/s); report in {shown_out / 'paper'}",
        highlight=False,
    )
    console.print(f"  paper fingerprint    {rep.fingerprint}", highlight=False)
    console.print(f"  backtest fingerprint {result.fingerprint} (same window): {same}", highlight=False)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @user_errors
    def demo(
        symbol: SymbolOpt = None,
        symbols_: SymbolsOpt = None,
        all_: AllOpt = False,
        out: OutOpt = Path("demo_out"),
        data_dir: DataDirOpt = Path("data"),
        days: Annotated[
            int, typer.Option("--days", help="Days of synthetic market when no data exists.")
        ] = 1095,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic market.")] = 7,
        backend: Annotated[str, typer.Option("--backend", help="lgbm, nn or both.")] = "lgbm",
        wf: Annotated[
            int, typer.Option("--wf", help="Purged walk-forward folds of the training report.")
        ] = 5,
        wf_backtest: Annotated[
            int, typer.Option("--walk-forward", help="Out-of-sample folds of the ML on/off backtest.")
        ] = 3,
        quiet: QuietOpt = False,
    ) -> None:
        """Main job: data (synthetic if none) → per-symbol training report → backtests → paper."""
        cfg = config_from_env()
        cfg = cfg.with_symbols(select_symbols(cfg, symbol, all_, symbols_))
        backends = {"lgbm": ["lgbm"], "nn": ["nn"], "both": ["lgbm", "nn"]}.get(backend.lower())
        if backends is None:
            raise ConfigError(f"--backend={backend!r}: expected lgbm, nn or both")
        if days < 30:
            raise ConfigError(f"--days={days}: need at least 30 days of candles")
        writable_folder(out, "--out")
        existing_folder(data_dir, "--data-dir")
        # Everything is written into a staging folder beside --out and moved into place only when
        # the whole demo succeeded: a failed demo leaves the previous one intact.
        with staged_folder(out) as stage:
            used_data = _prepare_data(cfg, data_dir, stage, days, seed, quiet, shown_out=out)
            _check_trainable(cfg, used_data, days, synthetic=used_data != data_dir)
            _train_all(cfg, used_data, stage / "models", backends, wf, quiet, shown_models=out / "models")
            _backtest(cfg, used_data, stage, wf_backtest, quiet, shown_out=out)
            _paper(cfg, used_data, stage, days, seed, used_data != data_dir, shown_out=out)
        console.print(
            "[bold yellow]Profitability is unproven[/]: these figures come from "
            + ("a synthetic market" if used_data != data_dir else "recorded data")
            + f" and validate the machinery, not an edge. Starting capital {DEMO_CAPITAL:,.0f} USDT"
            + " (split equally between the symbols). Reports are in "
            + f"{out}/backtest, {out}/walk_forward and {out}/paper."
        )
