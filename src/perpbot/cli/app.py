"""The typer app: the root callback and the registration of the command modules.

Why apart from ``cli.main``: importing typer (and click, which it carries) costs ~0.07 s, and a
``perpbot backtest`` forks its chart worker before that (``cli.main.main``): the worker needs
no typer, and starts its plotting imports that much sooner (issue 13).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import typer

from perpbot.cli import light_help, light_params
from perpbot.cli.main import COMMAND_MODULE, MODULES

if TYPE_CHECKING:
    from types import ModuleType


def _print_version(value: bool) -> None:
    if value:
        from perpbot import __version__

        typer.echo(f"perpbot {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """perpbot: multi-symbol Binance USDT-M perpetual bot with an ML entry filter."""


def build_app(modules: Iterable[str] = MODULES) -> typer.Typer:
    """The typer app with the commands of ``modules`` (names in :data:`MODULES`) registered."""
    light_params.install()  # str/Path/unset option values without importing pydantic
    light_help.install()  # help and usage errors without rich's markdown and traceback modules
    new = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        help="perpbot: multi-symbol Binance USDT-M perpetual bot with an ML entry filter.",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},  # -h everywhere, subcommands included
    )
    new.callback()(_root)
    for name in modules:
        module: ModuleType = importlib.import_module(f"perpbot.cli.{name}")
        module.register(new)
    return new


def app_for(argv: list[str]) -> typer.Typer:
    """The app for one command line: only the named command's module when the first argument is
    a known command (``perpbot backtest …``), else every command (``--help``, a typo's error)."""
    first = argv[0] if argv else ""
    module = COMMAND_MODULE.get(first)
    return build_app([module]) if module is not None else build_app()


def __getattr__(name: str) -> typer.Typer:
    # ``app`` is built on first use: ``main`` does not need every command module imported.
    if name == "app":
        full = build_app()
        globals()["app"] = full
        return full
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
