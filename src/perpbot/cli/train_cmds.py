"""``perpbot train``, ``perpbot tune`` and ``perpbot deploy`` (SPEC §7, issue 2 §8).

The commands are thin: the work lives in :mod:`perpbot.ml.training` / :mod:`perpbot.ml.tuning` /
:mod:`perpbot.ml.artifacts` so that ``scripts/train_model.py`` and ``scripts/tune_hyperparams.py``
call exactly the same code. What the CLI adds is the presentation — a per-fold table with the
no-ML baseline next to every model figure, because a filter that does not beat "take every
signal" is worse than no filter — and the error contract (one line, exit status 2).

With ``--all`` every symbol is attempted; a user error on one symbol is printed as one line and the
others still run; the exit status is 2 if any symbol failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.table import Table

from perpbot.cli.common import (
    AllOpt,
    DataDirOpt,
    ModelDirOpt,
    QuietOpt,
    SymbolOpt,
    SymbolsOpt,
    config_from_env,
    console,
    existing_folder,
    note_synthetic,
    progress,
    run_per_symbol,
    select_symbols,
    user_errors,
    writable_folder,
)
from perpbot.errors import PerpbotError

if TYPE_CHECKING:
    from rich.progress import Progress

    from perpbot.ml.train_report import TrainReport
    from perpbot.ml.training import ProgressFn
    from perpbot.ml.tuning import TuneReport

BackendOpt = Annotated[str, typer.Option("--backend", help="lgbm | nn (mlx is an alias of nn).")]
WfOpt = Annotated[int, typer.Option("--wf", help="Purged walk-forward folds (0 skips the report).")]
DecayOpt = Annotated[
    float | None, typer.Option("--decay", help="Time-weight decay d (default TIME_WEIGHT_DECAY).")
]
TunedOpt = Annotated[
    Path | None,
    typer.Option("--tuned-params", help="Params JSON (tune results or flat); beats active_lgbm_params.json."),
]


def progress_callback(bar: Progress) -> ProgressFn:
    """Map ``progress(description, completed, total)`` onto one rich task per symbol."""
    tasks: dict[str, Any] = {}

    def update(description: str, completed: int, total: int) -> None:
        key = description.split(" ", 1)[0]
        if key not in tasks:
            tasks[key] = bar.add_task(description, total=max(total, 1))
        bar.update(tasks[key], description=description, completed=completed, total=max(total, 1))

    return update


def _f(x: float, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def train_table(report: TrainReport) -> Table:
    """Per-fold out-of-sample figures (signal rows only), model next to the no-ML baseline."""
    table = Table(
        title=f"{report.symbol} [{report.backend}] purged walk-forward, validation signal rows only",
        caption="from: first validation day (yy-mm-dd); sig/pos: validation signals/positives; thr: chosen "
        "on the fold's early-stopping slice (* = fallback 0.50); acc: signals accepted; bAUC/bprec: "
        "no-ML baseline = the rule alone (takes every signal, recall 1.0; ranks by signal_strength); "
        "mean/std leave out folds without validation positives",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("fold", "from", "sig", "pos", "AUC", "thr", "prec", "rec", "acc", "bAUC", "bprec"):
        table.add_column(col, justify="left" if col == "from" else "right", no_wrap=True)
    for f in report.folds:
        table.add_row(
            str(f.fold + 1),
            f.val_start[2:10],
            str(f.n_val_signals),
            str(f.n_val_positives),
            _f(f.auc),
            _f(f.threshold, 2) + ("*" if f.threshold_fallback else ""),
            _f(f.precision),
            _f(f.recall),
            str(f.n_accepted),
            _f(f.baseline_auc),
            _f(f.baseline_precision),
        )
    if report.folds:
        s = report.summary
        table.add_section()
        for label, k in (("mean", 0), ("± std", 1)):
            table.add_row(
                label,
                "",
                "",
                "",
                _f(s["auc"][k]),
                "",
                _f(s["precision"][k]),
                _f(s["recall"][k]),
                "",
                _f(s["baseline_auc"][k]),
                _f(s["baseline_precision"][k]),
            )
    return table


def print_train_report(report: TrainReport) -> None:
    if report.folds:
        console.print(train_table(report))
    else:
        console.print(f"{report.symbol} [{report.backend}]: walk-forward skipped (--wf 0)")
    c = report.counts
    console.print(
        f"{report.symbol}: {c['samples']} samples ({c['signals']} signals, {c['signal_positives']} positive, "
        f"{c['hold_negatives']} HOLD negatives) from {c['bars']} bars; params: {report.params_source}"
    )
    console.print(
        f"{report.symbol}: final model threshold {_f(report.threshold, 3)}"
        f"{' (fallback)' if report.threshold_fallback else ''} — purged tail: AUC {_f(report.tail_auc)}, "
        f"precision {_f(report.tail_precision)}, recall {_f(report.tail_recall)}; "
        f"saved in {report.model_dir} ({report.seconds:.1f} s)"
    )
    for note in report.notes:
        console.print(f"{report.symbol}: note: {note}")
    console.print(
        f"{report.symbol} [{report.backend}]: gate {report.gate.upper()}: {report.gate_reason}",
        markup=False,
        highlight=False,
    )


def print_tune_report(report: TuneReport) -> None:
    table = Table(title=f"{report.symbol} tuning ({report.trials_total} trials, {report.trials_new} new)")
    for col in ("", "score", "AUC", "precision", "recall", "fold precision std", "folds counted"):
        table.add_column(col, justify="right")
    for name, cv in (("baseline (active)", report.baseline), ("best trial", report.best)):
        if cv is None:
            table.add_row(name, "—", "—", "—", "—", "—", "—")
        else:
            table.add_row(
                name,
                _f(cv.score, 4),
                _f(cv.auc),
                _f(cv.precision),
                _f(cv.recall),
                _f(cv.precision_std),
                str(cv.precision_folds),
            )
    console.print(table)
    verdict = (
        "PROMOTED to active_lgbm_params.json" if report.promoted else "not promoted (active params kept)"
    )
    console.print(f"{report.symbol}: {verdict}: " + "; ".join(report.reasons))
    console.print(f"{report.symbol}: results in {report.results_path}")


def run_symbols(symbols: list[str], quiet: bool, job: Callable[[str, ProgressFn], None]) -> int:
    """Run ``job(symbol, progress)`` per symbol under one progress bar (one task per symbol);
    return how many symbols failed (:func:`run_per_symbol`). Shared by the CLI and the scripts."""
    with progress(quiet) as bar:
        cb = progress_callback(bar)

        def one(sym: str) -> None:
            try:
                job(sym, cb)
            except PerpbotError:
                # The failed symbol's bar goes: after an error only its one line stays, never a
                # frozen half-drawn bar (issue 11 §1).
                for task in list(bar.tasks):
                    if task.description.split(" ", 1)[0] == sym:
                        bar.remove_task(task.id)
                raise

        return run_per_symbol(symbols, one)


def _exit_on_failures(failed: int) -> None:
    if failed:
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    @app.command("train")
    @user_errors
    def train_command(
        symbol: SymbolOpt = None,
        symbols_: SymbolsOpt = None,
        all_: AllOpt = False,
        backend: BackendOpt = "lgbm",
        wf: WfOpt = 5,
        decay: DecayOpt = None,
        tuned_params: TunedOpt = None,
        data_dir: DataDirOpt = Path("data"),
        model_dir: ModelDirOpt = Path("models"),
        quiet: QuietOpt = False,
    ) -> None:
        """Train a symbol's filter: purged walk-forward report next to the no-ML baseline, then the
        final model (ONNX + metadata) in <model-dir>/<symbol>/."""
        from perpbot.ml.backends import normalize_backend
        from perpbot.ml.training import train_symbol

        cfg = config_from_env()
        symbols = select_symbols(cfg, symbol, all_, symbols_)
        backend = normalize_backend(backend)
        existing_folder(data_dir, "--data-dir")
        writable_folder(model_dir, "--model-dir")
        note_synthetic(data_dir, symbols)

        def job(sym: str, cb: ProgressFn) -> None:
            report = train_symbol(
                sym,
                data_dir=data_dir,
                model_dir=model_dir,
                config=cfg,
                backend=backend,
                wf=wf,
                decay=decay,
                tuned_params=tuned_params,
                progress=cb,
            )
            print_train_report(report)

        _exit_on_failures(run_symbols(symbols, quiet, job))

    @app.command("tune")
    @user_errors
    def tune_command(
        symbol: SymbolOpt = None,
        symbols_: SymbolsOpt = None,
        all_: AllOpt = False,
        trials: Annotated[int, typer.Option("--trials", help="Total finished trials wanted (resumes).")] = 50,
        folds: Annotated[int, typer.Option("--folds", help="Purged walk-forward folds.")] = 5,
        min_recall: Annotated[float, typer.Option("--min-recall", help="Recall constraint per fold.")] = 0.35,
        no_baseline: Annotated[
            bool, typer.Option("--no-baseline", help="Skip the baseline (never promotes).")
        ] = False,
        data_dir: DataDirOpt = Path("data"),
        model_dir: ModelDirOpt = Path("models"),
        quiet: QuietOpt = False,
    ) -> None:
        """Optuna search (SQLite, resumable) on purged folds; promote only by the stated rule."""
        from perpbot.ml.tuning import tune_symbol

        cfg = config_from_env()
        symbols = select_symbols(cfg, symbol, all_, symbols_)
        existing_folder(data_dir, "--data-dir")
        writable_folder(model_dir, "--model-dir")
        note_synthetic(data_dir, symbols)

        def job(sym: str, cb: ProgressFn) -> None:
            report = tune_symbol(
                sym,
                data_dir=data_dir,
                model_dir=model_dir,
                config=cfg,
                trials=trials,
                folds=folds,
                min_recall=min_recall,
                baseline=not no_baseline,
                progress=cb,
            )
            print_tune_report(report)

        _exit_on_failures(run_symbols(symbols, quiet, job))

    @app.command("deploy")
    @user_errors
    def deploy_command(
        from_dir: Annotated[
            Path, typer.Option("--from", help="Staging models root (trained with --model-dir).")
        ],
        symbol: SymbolOpt = None,
        symbols_: SymbolsOpt = None,
        all_: AllOpt = False,
        model_dir: ModelDirOpt = Path("models"),
        force: Annotated[
            bool, typer.Option("--force", help="Deploy a model whose gate verdict is fail.")
        ] = False,
    ) -> None:
        """Replace symbols' model files with the staged ones, all or none (a running bot hot-reloads).

        Every symbol is verified first (files, feature schema, gate verdict); then each is written.
        Only the staged backends are replaced; the training log is appended to, never replaced.
        """
        from perpbot.ml.deploy import deploy_all

        cfg = config_from_env()
        symbols = select_symbols(cfg, symbol, all_, symbols_)
        existing_folder(from_dir, "--from")
        writable_folder(model_dir, "--model-dir")
        for plan in deploy_all(from_dir, model_dir, symbols, force=force):
            if plan.no_op:
                console.print(
                    f"{plan.symbol}: already deployed ({', '.join(plan.identical)} identical); "
                    "nothing changed",
                    markup=False,
                    highlight=False,
                )
                continue
            verdicts = [
                f"{f.backend} (gate {str(f.metadata.get('gate') or 'n/a').upper()})" for f in plan.changed
            ]
            what = [f"deployed {', '.join(verdicts)}"] if plan.changed else []
            if plan.identical:
                what.append(f"{', '.join(plan.identical)} identical (unchanged)")
            if plan.log_entries:
                what.append(f"{len(plan.log_entries)} training-log entries appended")
            console.print(f"{plan.symbol}: {'; '.join(what)} in {plan.dst}", markup=False, highlight=False)
            for backend in plan.kept:
                console.print(
                    f"{plan.symbol}: note: the {backend} model already in {plan.dst} stays untouched; "
                    f"ML_BACKENDS ({','.join(cfg.ml_backends)}) decides which model is served",
                    markup=False,
                    highlight=False,
                )
