"""Pieces every command shares: symbol selection, folders, progress bars and the error contract.

The error contract: a ``PerpbotError`` (bad input) is printed as one line on stderr and the
process exits with status 2; nothing is written half-way because writers are atomic.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from perpbot.config import AppConfig, load_config
from perpbot.errors import ConfigError, PerpbotError
from perpbot.symbols import normalize_symbol

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)

SymbolOpt = Annotated[str | None, typer.Option("--symbol", help="One symbol, e.g. XRPUSDT.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every symbol of SYMBOLS.")]
DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="Market data folder.")]
ModelDirOpt = Annotated[Path, typer.Option("--model-dir", help="Models folder.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def fail(message: str) -> None:
    """Print a one-line error and exit 2."""
    # Plain write, not rich: the one-line contract must hold whatever the terminal width.
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
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
    return load_config(env_file=Path(".env"))


def select_symbols(cfg: AppConfig, symbol: str | None, all_: bool) -> list[str]:
    """``--symbol S`` xor ``--all``; neither means the configured list."""
    if symbol and all_:
        raise ConfigError("--symbol and --all are mutually exclusive: pass one of them")
    if symbol:
        return [normalize_symbol(symbol, source="--symbol")]
    return list(cfg.symbols)


@contextmanager
def progress(quiet: bool) -> Iterator[Progress]:
    """A rich progress bar (disabled by ``--quiet`` or when stderr is not a terminal in CI)."""
    p = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )
    with p:
        yield p


def is_tty() -> bool:
    return sys.stderr.isatty()
