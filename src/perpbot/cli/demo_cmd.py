"""``perpbot demo``: the README's main job, offline and without keys.

It strings the real commands together on the embedded default market so that a new user sees the
whole pipeline once: data (recorded if present, else a deterministic synthetic market) → purged
walk-forward training per symbol next to the no-ML baseline → one multi-symbol backtest through
the real bots, with the ML filter on and off side by side. Nothing here is demo-only logic; it
calls the same functions as ``synth``, ``train`` and ``backtest``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from perpbot.cli.common import (
    DataDirOpt,
    QuietOpt,
    config_from_env,
    console,
    progress,
    user_errors,
)
from perpbot.config import AppConfig
from perpbot.data.schema import data_path
from perpbot.errors import ConfigError

OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the demo's data, models and reports.")]


def _prepare_data(cfg: AppConfig, data_dir: Path, out: Path, days: int, seed: int, quiet: bool) -> Path:
    """Use ``data_dir`` when it holds every symbol's file; otherwise synthesize all of them."""
    from perpbot.data.store import save_market
    from perpbot.data.synth import synth_market

    if all(data_path(data_dir, s).is_file() for s in cfg.symbols):
        console.print(f"[bold]data[/]: recorded files in {data_dir}/")
        return data_dir
    synth_dir = out / "data"
    console.print(
        f"[bold]data[/]: no recorded market in {data_dir}/ for {', '.join(cfg.symbols)}; "
        f"generating a deterministic synthetic market ({days} days, seed {seed}) in {synth_dir}/"
    )
    with progress(quiet) as bar:
        task = bar.add_task("synth", total=len(cfg.symbols))
        for symbol in cfg.symbols:
            frame = synth_market(days=days, seed=seed, symbol=symbol)
            save_market(frame, data_path(synth_dir, symbol), closed_through_ms=int(frame.index[-1].value // 1_000_000))
            bar.advance(task)
    return synth_dir


def _train_all(cfg: AppConfig, data_dir: Path, model_dir: Path, backends: list[str], wf: int, quiet: bool) -> None:
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
            print_train_report(report)


def _backtest(cfg: AppConfig, data_dir: Path, model_dir: Path, out: Path, quiet: bool) -> Table:
    from perpbot.backtest.report import summary_renderable, write_report
    from perpbot.backtest.runner import BacktestConfig, run_backtest

    rows = []
    for use_ml in (True, False):
        label = "ml_on" if use_ml else "ml_off"
        bt_cfg = BacktestConfig(symbols=cfg.symbols, data_dir=data_dir, model_dir=model_dir, use_ml=use_ml)
        with progress(quiet) as bar:
            task = bar.add_task(f"backtest ({label.replace('_', ' ')})", total=None)

            def on_progress(done: int, total: int, task: int = task) -> None:
                bar.update(task, completed=done, total=total)

            result = asyncio.run(run_backtest(bt_cfg, cfg, progress=on_progress))
        files = write_report(
            out / f"backtest_{label}",
            result.trades,
            result.metrics,
            result.parameters(),
            title=result.title,
            markers=result.markers(),
        )
        if use_ml:
            console.print(summary_renderable(result.metrics, files, result.title, result.notes()))
        rows.append((label, result.metrics.portfolio, result.fingerprint))

    table = Table(title="ML filter on vs off (same candles, same bots, same risk manager)")
    for col in ("run", "trades", "win rate", "profit factor", "net PnL", "max DD %", "fingerprint"):
        table.add_column(col)
    for label, m, fp in rows:
        table.add_row(
            label,
            str(m.trades),
            _fmt(m.win_rate),
            _fmt(m.profit_factor),
            f"{m.net_pnl:.2f}",
            f"{m.max_drawdown_pct:.2f}",
            fp[:16],
        )
    return table


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @user_errors
    def demo(
        out: OutOpt = Path("demo_out"),
        data_dir: DataDirOpt = Path("data"),
        days: Annotated[int, typer.Option("--days", help="Days of synthetic market when no data exists.")] = 365,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic market.")] = 7,
        backend: Annotated[str, typer.Option("--backend", help="lgbm, nn or both.")] = "lgbm",
        wf: Annotated[int, typer.Option("--wf", help="Purged walk-forward folds.")] = 5,
        quiet: QuietOpt = False,
    ) -> None:
        """Main job: data (synthetic if none) → per-symbol training report → multi-symbol backtest."""
        cfg = config_from_env()
        backends = {"lgbm": ["lgbm"], "nn": ["nn"], "both": ["lgbm", "nn"]}.get(backend.lower())
        if backends is None:
            raise ConfigError(f"--backend={backend!r}: expected lgbm, nn or both")
        if days < 30:
            raise ConfigError(f"--days={days}: need at least 30 days of candles")
        out.mkdir(parents=True, exist_ok=True)
        model_dir = out / "models"
        used_data = _prepare_data(cfg, data_dir, out, days, seed, quiet)
        _train_all(cfg, used_data, model_dir, backends, wf, quiet)
        console.print(_backtest(cfg, used_data, model_dir, out, quiet))
        console.print(
            "[bold yellow]Profitability is unproven[/]: these figures come from "
            + ("a synthetic market" if used_data != data_dir else "recorded data")
            + " and validate the machinery, not an edge. Reports are in "
            + f"{out}/backtest_ml_on and {out}/backtest_ml_off."
        )
