"""Pieces every command shares: symbol selection, folders, progress bars and the error contract.

The error contract: a ``PerpbotError`` (bad input) is printed as one line on stderr and the
process exits with status 2; nothing is written half-way because writers are atomic.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from perpbot.errors import ConfigError, PerpbotError
from perpbot.fileio import UnwritableFolderError, check_writable_folder
from perpbot.symbols import normalize_symbol

if TYPE_CHECKING:  # pydantic-core loads when a command reads its configuration, not for --help
    from rich.console import Console
    from rich.progress import Progress

    from perpbot.config import AppConfig

F = TypeVar("F", bound=Callable[..., Any])

PIPE_WIDTH = 200
"""Width of rich output on a pipe or file: wide enough that tables never squeeze, and text is not
wrapped at all (``soft_wrap``), so ``perpbot … | grep`` and logs see whole lines. A terminal keeps
its own width; ``COLUMNS`` still wins when set."""


def _console(*, stderr: bool) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=PIPE_WIDTH if piped else None, soft_wrap=piped)


def lazy_console(name: str) -> Console:
    """``console`` (stdout) or ``err_console`` (stderr), made on first use: importing rich
    (~25 ms) is then not on the way to a backtest's first candle (issue 13)."""
    made = globals().get(name)
    if made is None:
        made = globals()[name] = _console(stderr=name == "err_console")
    return made


def __getattr__(name: str) -> Console:
    # ``from perpbot.cli.common import console`` works as before: the module attribute is made
    # on first access (``lazy_console``).
    if name in ("console", "err_console"):
        return lazy_console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SymbolOpt = Annotated[str | None, typer.Option("--symbol", help="One symbol, e.g. XRPUSDT.")]
SymbolsOpt = Annotated[
    str | None, typer.Option("--symbols", help="Comma-separated symbols, e.g. XRPUSDT,TRXUSDT.")
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every symbol of SYMBOLS.")]
DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="Market data folder.")]
ModelDirOpt = Annotated[Path, typer.Option("--model-dir", help="Models folder.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def error_line(message: object) -> None:
    """Write ``error: <message>`` as exactly one line on stderr.

    Plain write, not rich: rich wraps at the terminal width, and the one-line contract must hold
    whatever the width (and whatever newlines a library put into the message).
    """
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()


def fail(message: str) -> None:
    """Print a one-line error and exit 2."""
    error_line(message)
    raise typer.Exit(2)


def user_errors(fn: F) -> F:
    """Turn ``PerpbotError`` into the one-line / exit-2 contract."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PerpbotError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]


def config_from_env() -> AppConfig:
    from perpbot.config import load_config

    return load_config(env_file=Path(".env"))


def env_with_dotenv(env_file: Path = Path(".env")) -> dict[str, str]:
    """The process environment over ``.env`` (python-dotenv semantics): the settings
    ``config_from_env`` reads, as a mapping, so that a configuration built from it elsewhere (the
    paper run's, pointed at its simulator) sees the same strategy, risk and alert settings."""
    from dotenv import dotenv_values

    merged = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    merged.update(os.environ)
    return merged


def select_symbols(cfg: AppConfig, symbol: str | None, all_: bool, symbols: str | None = None) -> list[str]:
    """The one symbol-selection rule of every command: ``--symbol S``, ``--symbols A,B`` or
    ``--all`` (at most one of them); none means the configured ``SYMBOLS``."""
    from perpbot.config import parse_csv

    given = [flag for flag, v in (("--symbol", symbol), ("--symbols", symbols), ("--all", all_)) if v]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)} are mutually exclusive: pass one of them")
    if symbol:
        items = [normalize_symbol(symbol, source="--symbol")]
    elif symbols is not None:
        items = [normalize_symbol(s, source="--symbols") for s in parse_csv(symbols)]
        if not items:
            raise ConfigError(f"--symbols={symbols!r}: no symbol given")
        if len(set(items)) != len(items):
            raise ConfigError(f"--symbols={symbols!r}: a symbol is listed twice")
    else:
        items = list(cfg.symbols)
    for sym in sorted(cfg.override_symbols - set(items)):
        warn(
            f"per-symbol settings for {sym} (ATR_SL_MULT_{sym}, …) are ignored: {sym} is not traded "
            f"in this run ({', '.join(items)})"
        )
    return items


def note_synthetic(data_dir: Path, symbols: Sequence[str]) -> list[str]:
    """Say so (stderr) for every symbol whose data file is a synthetic market; return them."""
    from perpbot.backtest.input_cache import cached_synthetic_origin
    from perpbot.data.schema import data_path

    found: list[str] = []
    for sym in symbols:
        path = data_path(data_dir, sym)
        origin = cached_synthetic_origin(path) if path.is_file() else None
        if origin is not None:
            found.append(sym)
            sys.stderr.write(
                f"note: {sym}: {path} is a SYNTHETIC market ({origin}), not recorded data; "
                "its results validate the machinery, not a strategy\n"
            )
    return found


def warn(message: str) -> None:
    """``warning: <message>`` as one line on stderr (never wrapped)."""
    sys.stderr.write(f"warning: {' '.join(message.split())}\n")
    sys.stderr.flush()


def writable_folder(path: Path, flag: str) -> Path:
    """``path`` when it is (or can become) a writable folder, else one-line ``ConfigError``
    naming the flag; checked before any computing starts. The folder beside it is checked too:
    staged runs (``fileio.staged_folder``) write their temporary folder there."""
    try:
        check_writable_folder(path)
        check_writable_folder(path.absolute().parent)
    except UnwritableFolderError as exc:
        where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != Path(path) else ""
        raise ConfigError(f"{flag}={path}: not writable{where}: {exc.strerror or exc}") from None
    return path


def existing_folder(path: Path, flag: str) -> Path:
    """An input folder: an existing non-folder is refused here (one line); a missing folder is
    left to the per-file checks, whose message names the missing file and how to get it."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}={path}: an existing file, not a folder")
    return path


def run_per_symbol(symbols: Sequence[str], job: Callable[[str], None]) -> int:
    """Run ``job`` per symbol and return how many failed.

    One symbol: a ``PerpbotError`` propagates (the caller prints it and exits 2). Several
    (``--all``): each failure is printed as one line and the other symbols still run, because one
    bad data file should not cost the user the other symbols' training; the caller exits 2 when
    the count is non-zero.
    """
    if len(symbols) == 1:
        job(symbols[0])
        return 0
    failed = 0
    for sym in symbols:
        try:
            job(sym)
        except PerpbotError as exc:
            failed += 1
            error_line(exc)
    return failed


@dataclass
class QuietTask:
    """One task of a :class:`QuietProgress` (the fields the commands read of a rich task)."""

    id: int
    description: str
    completed: float = 0.0
    total: float | None = None


class QuietProgress:
    """What the commands use of a rich ``Progress``, drawing nothing (``progress(quiet=True)``)."""

    def __init__(self) -> None:
        self._tasks: dict[int, QuietTask] = {}

    @property
    def tasks(self) -> list[QuietTask]:
        return list(self._tasks.values())

    def add_task(
        self,
        description: str,
        start: bool = True,
        total: float | None = 100.0,
        completed: float = 0,
        visible: bool = True,
        **fields: Any,
    ) -> int:
        task_id = max(self._tasks, default=-1) + 1
        self._tasks[task_id] = QuietTask(task_id, description, completed, total)
        return task_id

    def update(
        self,
        task_id: int,
        *,
        total: float | None = None,
        completed: float | None = None,
        advance: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        task = self._tasks[task_id]
        task.description = task.description if description is None else description
        task.total = task.total if total is None else total
        task.completed = task.completed if completed is None else completed
        task.completed += advance or 0.0

    def advance(self, task_id: int, advance: float = 1.0) -> None:
        self._tasks[task_id].completed += advance

    def remove_task(self, task_id: int) -> None:
        del self._tasks[task_id]


@contextmanager
def progress(quiet: bool) -> Iterator[Progress]:
    """A rich progress bar on stderr (stdout stays clean for results); ``--quiet`` disables it.

    On a non-terminal stderr (CI logs, pipes) rich draws nothing while running and prints the
    final state once, which is what a log should hold. ``--quiet``: a :class:`QuietProgress`
    that only counts, so rich is not imported for it (issue 13, a backtest's first candle).
    """
    if quiet:
        yield QuietProgress()  # type: ignore[misc]
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=lazy_console("err_console"),
        transient=False,
    )
    with p:
        try:
            yield p
            if not p.tasks:  # every task was removed (failed symbols): no empty frame either
                p.live.transient = True
        except BaseException:
            # A failed job leaves only its one error line: the half-drawn bar is erased instead
            # of being printed as a final frame (which a log or a pipe would keep).
            p.live.transient = True
            raise


# --------------------------------------------------------------------------------------------
# scripts/*.py: the SPEC's argparse front ends share the symbol/folder flags and their rules.


def add_symbol_args(ap: argparse.ArgumentParser) -> None:
    """``--data``, ``--symbol``, ``--all``, ``--data-dir``, ``--model-dir``, ``--quiet``."""
    ap.add_argument(
        "--data", type=Path, help="Market parquet file (default data/<symbol>/combined_15m.parquet)."
    )
    ap.add_argument("--symbol", help="One symbol, e.g. XRPUSDT.")
    ap.add_argument("--all", action="store_true", help="Every configured symbol (SYMBOLS).")
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--model-dir", type=Path, default=Path("models"))
    ap.add_argument("--quiet", action="store_true", help="No progress bar.")


def script_symbols(cfg: AppConfig, args: argparse.Namespace) -> list[str]:
    """Symbols of a script run: ``--data`` without ``--symbol`` takes the symbol from the file's
    folder (``data/xrpusdt/combined_15m.parquet`` → ``XRPUSDT``); one file holds one symbol."""
    if args.data is not None and args.all:
        raise ConfigError("--data and --all are mutually exclusive: one file holds one symbol")
    if args.data is not None and not args.symbol:
        try:
            return [normalize_symbol(args.data.parent.name, source="--data folder")]
        except ConfigError:
            raise ConfigError(
                f"--data={args.data}: cannot tell the symbol from the folder name; pass --symbol"
            ) from None
    return select_symbols(cfg, args.symbol, args.all)


def run_script(body: Callable[[], int]) -> int:
    """Run a script's body under the error contract: one line on stderr, exit status 2."""
    try:
        return body()
    except PerpbotError as exc:
        error_line(exc)
        return exc.exit_code
