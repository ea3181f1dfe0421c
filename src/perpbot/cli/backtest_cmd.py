"""``perpbot backtest``: the multi-symbol backtest (and its walk-forward variant) from the shell.

The command only parses and validates flags, then hands a ``BacktestConfig`` to the runner; all
logic lives in ``perpbot.backtest`` so tests and benchmarks drive the very same code. Bad input
(unknown symbol, ``--symbols`` with ``--all``, a bad date, a missing data file) is one line on
stderr and exit status 2, before anything is computed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from perpbot.cli.common import (
    AllOpt,
    DataDirOpt,
    ModelDirOpt,
    QuietOpt,
    SymbolOpt,
    SymbolsOpt,
    config_from_env,
    existing_folder,
    note_synthetic,
    progress,
    select_symbols,
    user_errors,
    warn,
    writable_folder,
)
from perpbot.cli.flag_values import parse_number, parse_utc
from perpbot.errors import ConfigError
from perpbot.fileio import relocate, staged_folder

if TYPE_CHECKING:  # the backtest stack is imported only when the command runs (fast --help)
    from perpbot.backtest.chart_jobs import ChartJob
    from perpbot.backtest.chart_pool import ChartPool
    from perpbot.backtest.report import ReportFiles
    from perpbot.backtest.runner import BacktestConfig, BacktestResult
    from perpbot.backtest.walk_forward import WalkForwardResult
    from perpbot.config import AppConfig
    from perpbot.ml.filter import MLFilter
FromOpt = Annotated[
    str | None,
    typer.Option("--from", help="First candle open time, UTC, inclusive (2025-06-01 or 2025-06-01T12:00)."),
]
ToOpt = Annotated[
    str | None, typer.Option("--to", help="End of the run, UTC, exclusive (candles opening before it).")
]
NoMlOpt = Annotated[bool, typer.Option("--no-ml", help="Trade every rule signal (no ML filter).")]
WalkForwardOpt = Annotated[
    int | None,
    typer.Option(
        "--walk-forward",
        help="K out-of-sample folds: retrain on each purged training window, trade the next one; "
        "ML on and off side by side.",
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Report folder.")]
BalanceOpt = Annotated[
    str, typer.Option("--balance", help="Starting capital in USDT, split equally between the symbols.")
]
TakerFeeOpt = Annotated[
    str | None, typer.Option("--taker-fee", help="Taker fee as a fraction, e.g. 0.0005 (default TAKER_FEE).")
]
MakerFeeOpt = Annotated[
    str | None, typer.Option("--maker-fee", help="Maker fee as a fraction, e.g. 0.0002 (default MAKER_FEE).")
]
SlippageOpt = Annotated[
    str | None,
    typer.Option("--slippage-bps", help="Market-order slippage in basis points (default SLIPPAGE_BPS)."),
]
KillSwitchOpt = Annotated[
    str,
    typer.Option(
        "--kill-switch",
        help="on (as live: latches), off (never trips) or reset-after=DAYS (automatic reset).",
    ),
]

MAX_FEE = 0.01  # 1 %: twenty times Binance's taker fee; anything above is a typo (0.05 for 0.0005)
MAX_SLIPPAGE_BPS = 1000.0


def register(app: typer.Typer) -> None:
    @app.command("backtest")
    @user_errors
    def backtest(
        symbol: SymbolOpt = None,
        symbols: SymbolsOpt = None,
        all_: AllOpt = False,
        data_dir: DataDirOpt = Path("data"),
        model_dir: ModelDirOpt = Path("models"),
        from_: FromOpt = None,
        to: ToOpt = None,
        no_ml: NoMlOpt = False,
        walk_forward: WalkForwardOpt = None,
        out: OutOpt = Path("runs/backtest"),
        quiet: QuietOpt = False,
        balance: BalanceOpt = "1000",
        taker_fee: TakerFeeOpt = None,
        maker_fee: MakerFeeOpt = None,
        slippage_bps: SlippageOpt = None,
        kill_switch: KillSwitchOpt = "on",
    ) -> None:
        """Backtest the real bots over recorded candles; writes trades.csv, metrics.json and charts."""
        from perpbot.backtest.chart_pool import ChartPool

        # The chart worker forks first (one thread, nothing heavy imported yet): it imports and warms
        # up the plotting libraries while this process validates, loads and runs (issue 13).
        with (
            ChartPool.start() if walk_forward is None else ChartPool() as pool,
            collector_paused(walk_forward is None),
        ):
            from perpbot.backtest.kill_switch_policy import KillSwitchPolicy
            from perpbot.backtest.runner import BacktestConfig, check_inputs

            initial = parse_number(balance, "--balance", low=0.0, high=1e12, low_inclusive=False)
            costs = {
                "taker_fee": parse_number(taker_fee, "--taker-fee", low=0.0, high=MAX_FEE),
                "maker_fee": parse_number(maker_fee, "--maker-fee", low=0.0, high=MAX_FEE),
                "slippage_bps": parse_number(slippage_bps, "--slippage-bps", low=0.0, high=MAX_SLIPPAGE_BPS),
            }
            policy = KillSwitchPolicy.parse(kill_switch)

            app_cfg = config_from_env()
            syms = tuple(select_symbols(app_cfg, symbol, all_, symbols))
            start = parse_utc(from_, "--from")
            end = parse_utc(to, "--to")
            if start is not None and end is not None and start >= end:
                raise ConfigError(f"--from={from_!r} is not before --to={to!r}")
            if walk_forward is not None and walk_forward < 1:
                raise ConfigError(f"--walk-forward={walk_forward}: need at least 1 fold")
            if walk_forward is not None and no_ml:
                raise ConfigError(
                    "--no-ml with --walk-forward: the walk-forward always trades ML on and ML off side "
                    "by side on the same windows; drop --no-ml (its ml_off report is the no-ML run)"
                )
            writable_folder(out, "--out")
            existing_folder(data_dir, "--data-dir")
            existing_folder(model_dir, "--model-dir")
            use_ml = not (no_ml or app_cfg.no_ml_filter)
            bt_cfg = BacktestConfig(
                symbols=syms,
                data_dir=data_dir,
                model_dir=model_dir,
                start=start,
                end=end,
                use_ml=use_ml,
                initial_balance=initial or 1000.0,
                kill_switch=policy,
                **costs,
            )
            check_inputs(bt_cfg)
            warn_estimated_filters(syms)
            note_synthetic(data_dir, syms)

            if walk_forward is not None:
                walk_forward_and_print(bt_cfg, app_cfg, walk_forward, out, quiet=quiet)
            else:
                run_and_print(bt_cfg, app_cfg, out, quiet=quiet, pool=pool)


@contextmanager
def collector_paused(pause: bool) -> Iterator[None]:
    """No garbage collection while the data stack imports (nothing it builds is garbage; a full
    pass over pandas cost 0.15-0.5 s); the run turns it back on with everything frozen
    (``_run_and_print``). Restored on the way out, however the command ends."""
    was = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def warn_estimated_filters(symbols: tuple[str, ...]) -> None:
    """Say so when a symbol's tick/step filters are estimated instead of recorded: its order
    rounding, minimum quantity and therefore its trades are an approximation."""
    from perpbot.exchange.known_filters import KNOWN_FILTERS

    for sym in symbols:
        if sym not in KNOWN_FILTERS:
            warn(
                f"{sym}: no recorded exchange filters; tick size, step size and minimum quantity are "
                "estimated from its price level, so its order rounding is approximate"
            )


def ml_filters(bt_cfg: BacktestConfig, app_cfg: AppConfig) -> dict[str, MLFilter]:
    """ML on: every symbol's filter, or one line naming the model file and why it cannot load."""
    from perpbot.ml.filter import backtest_filter

    return {s: backtest_filter(bt_cfg.model_dir, s, app_cfg) for s in bt_cfg.symbols}


def filter_lines(filters: dict[str, MLFilter]) -> list[str]:
    """Per symbol: what the filter saw and decided, and which threshold from where (issue 11 §2)."""
    out: list[str] = []
    for sym, f in filters.items():
        if not f.has_model:
            out.append(f"{sym}: ML filter not used, every signal passes: {f.unavailable_reason}")
            continue
        out.append(
            f"{sym}: ML filter {f.backend}, threshold {f.threshold:.3f} (from the {f.threshold_source}): "
            f"{f.seen} signals seen, {f.accepted} accepted, {f.rejected} rejected"
        )
    return out


def relocate_files(files: ReportFiles, staged: Path, out: Path) -> ReportFiles:
    """The report's file names once the staged run folder has been moved to ``out``."""
    from dataclasses import fields

    return replace(files, **{f.name: relocate(getattr(files, f.name), staged, out) for f in fields(files)})


def run_and_print(
    bt_cfg: BacktestConfig,
    app_cfg: AppConfig,
    out: Path,
    *,
    quiet: bool,
    shown_out: Path | None = None,
    pool: ChartPool | None = None,
) -> BacktestResult:
    """Run one backtest with a progress bar, write the report into ``out`` and print the summary.

    The run writes into a temporary folder beside ``out`` (journal included) that replaces the
    previous run's files only when everything succeeded: a failed run leaves the previous one
    intact. Public so that other commands (the demo) show exactly what ``perpbot backtest`` shows;
    ``shown_out`` is where ``out`` will finally live when the caller stages it too (file names).
    ``pool`` draws the charts (the caller's, started early); by default one is started here.
    """
    if pool is not None:
        return _run_and_print(bt_cfg, app_cfg, out, pool, quiet=quiet, shown_out=shown_out)
    from perpbot.backtest.chart_pool import ChartPool

    # Forked before anything else runs (no thread yet): the worker imports and warms up the
    # plotting libraries on the other core while this process runs the backtest (issue 13).
    with ChartPool.start() as own:
        return _run_and_print(bt_cfg, app_cfg, out, own, quiet=quiet, shown_out=shown_out)


def _run_and_print(
    bt_cfg: BacktestConfig,
    app_cfg: AppConfig,
    out: Path,
    pool: ChartPool,
    *,
    quiet: bool,
    shown_out: Path | None,
) -> BacktestResult:
    import asyncio

    from perpbot.backtest.runner import run_backtest

    filters = ml_filters(bt_cfg, app_cfg) if bt_cfg.use_ml and bt_cfg.entry_filters is None else {}
    if filters:
        bt_cfg = replace(bt_cfg, entry_filters=filters)
    with staged_folder(out) as stage:
        bt_cfg = replace(bt_cfg, journal_path=stage / "journal.sqlite3")
        with progress(quiet) as bar:
            task = bar.add_task("backtest " + ",".join(bt_cfg.symbols), total=None)

            def on_progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            # Everything imported so far lives until exit: the collector need not rescan it in
            # each full collection during the run (measured: ~0.1-0.3 s per full pass with pandas).
            gc.freeze()
            gc.enable()
            # The trade charts' candles go to the chart worker before the loop: it draws them meanwhile.
            result = asyncio.run(
                run_backtest(bt_cfg, app_cfg, progress=on_progress, on_window=pool.send_ahead)
            )
        # Imported once the run is done: nothing before the first candle waits for the report.
        from perpbot.backtest.report import equity_chart_jobs, report_files, write_tables

        params = result.parameters()
        if filters:
            params["model_dir"] = str(bt_cfg.model_dir)
            params["ml_filters"] = {s: f.status() for s, f in filters.items()}
        files = report_files(stage)
        jobs = equity_chart_jobs(files, result.metrics, result.title, result.markers())
        trade_jobs = trade_chart_jobs(result, stage)
        # The charts go first: the worker draws them while this process writes the tables and
        # lays out the summary (rich is imported now, off the way to the first candle).
        pool.send([*jobs, *trade_jobs])
        write_tables(
            files, result.trades, result.metrics, params, {s: f.tick_size for s, f in result.filters.items()}
        )
        shown = shown_out or out
        summary = summary_text(
            result,
            relocate_files(files, stage, shown),
            [relocate(j.path, stage, shown) for j in trade_jobs],
            filters,
        )
        pool.finish()
    from perpbot.cli.common import console, err_console

    for warning in result.warnings:
        err_console.print(f"warning: {warning}", markup=False, highlight=False)
    console.file.write(summary)
    console.file.flush()
    return result


def summary_text(
    result: BacktestResult, files: ReportFiles, charts: list[Path], filters: dict[str, MLFilter]
) -> str:
    """What ``perpbot backtest`` prints on stdout after a run, rendered by its console (same width,
    colours and wrapping as ``console.print``) but not yet written."""
    from perpbot.backtest.report import summary_renderable
    from perpbot.cli.common import console

    with console.capture() as captured:
        console.print(summary_renderable(result.metrics, files, result.title, result.notes(), sim=result.sim))
        console.print(f"trade charts: {', '.join(str(p) for p in charts)}", markup=False, highlight=False)
        for line in filter_lines(filters):
            console.print(line, markup=False, highlight=False)
    return captured.get()


def trade_chart_jobs(result: BacktestResult, out: Path) -> list[ChartJob]:
    """``trades_<symbol>.png/.html`` jobs of a finished run, on the candles the run traded."""
    from perpbot.backtest.chart_jobs import trade_jobs
    from perpbot.backtest.trade_chart import chart_stem, trade_chart_inputs

    inputs = trade_chart_inputs(result.candles, result.trades, result.markers(), result.config.journal_path)
    return [j for chart in inputs for j in trade_jobs(chart, chart_stem(out, chart.symbol))]


def walk_forward_and_print(
    bt_cfg: BacktestConfig,
    app_cfg: AppConfig,
    folds: int,
    out: Path,
    *,
    quiet: bool,
    shown_out: Path | None = None,
) -> WalkForwardResult:
    """``--walk-forward K``: train, trade, write ``out/walk_forward.json`` and both modes' reports."""
    from perpbot.backtest.walk_forward import run_walk_forward, walk_forward_renderable

    writable_folder(out, "--out")
    with progress(quiet) as bar:
        task = bar.add_task(f"walk-forward K={folds} " + ",".join(bt_cfg.symbols), total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with staged_folder(out) as stage:
            wf = run_walk_forward(bt_cfg, app_cfg, folds=folds, out_dir=stage, progress=on_progress)
    shown = shown_out or out
    wf = replace(
        wf,
        out_dir=shown,
        files={m: relocate_files(f, stage, shown) for m, f in wf.files.items()},
        summary_path=None if wf.summary_path is None else relocate(wf.summary_path, stage, shown),
        charts=tuple(relocate(p, stage, shown) for p in wf.charts),
    )
    from perpbot.cli.common import console

    console.print(walk_forward_renderable(wf))
    return wf
