"""``perpbot optimize``: strategy-parameter search on anchored walk-forward windows (issue 12).

Parses flags into ``OptimizeSettings`` and hands them to ``perpbot.optimize.run``; every bad
input (unknown metric, ``--trials 0``, too few candles for the folds, an unreachable or wrongly
authenticated storage, a study made with other data/settings) is one line and exit 2 before any
trial runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from perpbot.cli.common import (
    AllOpt,
    DataDirOpt,
    ModelDirOpt,
    SymbolOpt,
    SymbolsOpt,
    config_from_env,
    console,
    error_line,
    select_symbols,
    user_errors,
)


def register(app: typer.Typer) -> None:
    @app.command("optimize")
    @user_errors
    def optimize(
        symbol: SymbolOpt = None,
        symbols: SymbolsOpt = None,
        all_: AllOpt = False,
        trials: Annotated[
            int, typer.Option("--trials", help="Finished trials wanted per symbol (total).")
        ] = 100,
        folds: Annotated[int, typer.Option("--folds", help="K anchored walk-forward folds.")] = 5,
        metric: Annotated[str, typer.Option("--metric", help="net | pf | sharpe | calmar.")] = "sharpe",
        min_trades: Annotated[
            int, typer.Option("--min-trades", help="Fewer OOS trades = failed trial.")
        ] = 50,
        storage: Annotated[
            str | None,
            typer.Option(
                "--storage",
                envvar="PERPBOT_OPTIMIZE_STORAGE",
                help="postgresql://user:pw@host:port/db (default SQLite in --out); "
                "or set PERPBOT_OPTIMIZE_STORAGE to keep the password off the command line.",
            ),
        ] = None,
        study: Annotated[
            str, typer.Option("--study", help="Study name (per symbol: NAME-SYMBOL).")
        ] = "perpbot-optimize",
        workers: Annotated[int, typer.Option("--workers", help="Worker processes on this machine.")] = 1,
        out: Annotated[Path, typer.Option("--out", help="Report folder (and the SQLite study).")] = Path(
            "optimize_out"
        ),
        data_dir: DataDirOpt = Path("data"),
        model_dir: ModelDirOpt = Path("models"),
        ml: Annotated[bool, typer.Option("--ml", help="Use the ML entry filter (off by default).")] = False,
        sampler: Annotated[
            str, typer.Option("--sampler", help="tpe (adaptive) | qmc (reproducible plan).")
        ] = "tpe",
        seed: Annotated[int, typer.Option("--seed", help="Sampler seed.")] = 42,
        heartbeat: Annotated[
            int,
            typer.Option(
                "--heartbeat", help="Seconds between a running trial's heartbeats (stale after 2x)."
            ),
        ] = 30,
        no_promote: Annotated[bool, typer.Option("--no-promote", help="Never write overrides.")] = False,
        env_file: Annotated[
            Path, typer.Option("--env-file", help="Overrides file written on promotion.")
        ] = Path(".env"),
        worker_only: Annotated[bool, typer.Option("--worker-only", hidden=True)] = False,
        worker_index: Annotated[int, typer.Option("--worker-index", hidden=True)] = 0,
    ) -> None:
        """Search ATR_SL_MULT, ATR_TP_MULT, SIGNAL_THRESHOLD, ADX_THRESHOLD, VOL_MULTIPLIER per symbol
        on purged walk-forward windows, with PBO and deflated Sharpe; promote only if it passes."""
        from perpbot.optimize.run import run_optimize
        from perpbot.optimize.study import OptimizeSettings

        cfg = config_from_env()
        settings = OptimizeSettings(
            symbols=tuple(select_symbols(cfg, symbol, all_, symbols)),
            trials=trials,
            folds=folds,
            metric=metric,
            min_trades=min_trades,
            storage=storage,
            study=study,
            workers=workers,
            out=out,
            data_dir=data_dir,
            model_dir=model_dir,
            use_ml=ml,
            sampler=sampler,
            seed=seed,
            heartbeat=heartbeat,
            worker_only=worker_only,
            promote_to=None if no_promote else env_file,
        )
        try:
            run = run_optimize(settings, cfg, worker_index=worker_index, echo=console.print)
        except KeyboardInterrupt:
            error_line("interrupted: the running trial was queued again; run the same command to resume")
            raise typer.Exit(130) from None
        if worker_only:
            return
        for sym, a in run.analyses.items():
            best = (
                "none"
                if a.best is None
                else f"trial {a.best.number} {a.metric}={a.best.outcome['oos_score']:.4g}"
            )  # type: ignore[index]
            pbo = "n/a" if a.pbo.pbo is None else f"{a.pbo.pbo:.2f}"
            dsr = "n/a" if a.dsr is None or a.dsr.dsr is None else f"{a.dsr.dsr:.3f}"
            console.print(
                f"{sym}: best {best}; defaults {a.metric}={a.defaults.oos_score:.4g}; PBO {pbo}; DSR {dsr}; "
                f"verdict: {'best beats defaults out of sample' if a.passed else 'does NOT beat defaults'}"
            )
        console.print(f"report: {run.report} (+ {len(run.charts)} charts) in {run.seconds:.1f}s")
