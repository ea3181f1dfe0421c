"""The ``perpbot`` console script: one typer app, one module per command group."""

from __future__ import annotations

import gc
import os
import sys

import typer

from perpbot.cli import (
    backtest_cmd,
    config_cmd,
    data_cmds,
    demo_cmd,
    exchange_cmd,
    features_cmd,
    inspect_cmds,
    ops_cmds,
    optimize_cmd,
    run_cmds,
    simulate_cmd,
    train_cmds,
)
from perpbot.cli.common import PIPE_WIDTH

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="perpbot: multi-symbol Binance USDT-M perpetual bot with an ML entry filter.",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # -h everywhere, subcommands included
)


def _print_version(value: bool) -> None:
    if value:
        from perpbot import __version__

        typer.echo(f"perpbot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    """perpbot: multi-symbol Binance USDT-M perpetual bot with an ML entry filter."""


# Registration stays one module per command group. A command module imports only typer, rich and
# light perpbot modules at top level; pandas, pydantic-core, plotting, ML runtimes and ccxt are
# imported inside the command that runs (tests/test_cli_imports.py fails otherwise), so --help and
# every other command skip what they do not use (issue 13).
for module in (
    config_cmd,
    data_cmds,
    features_cmd,
    train_cmds,
    backtest_cmd,
    demo_cmd,
    inspect_cmds,
    simulate_cmd,
    optimize_cmd,
    exchange_cmd,
    run_cmds,
    ops_cmds,
):
    module.register(app)


def main() -> None:
    if not sys.stdout.isatty() and not os.environ.get("COLUMNS") and not os.environ.get("TERMINAL_WIDTH"):
        # Help on a pipe: as wide as the rest of the output (cli.common.PIPE_WIDTH), not 80.
        from typer import rich_utils

        rich_utils.MAX_WIDTH = PIPE_WIDTH
    gc.freeze()  # the CLI's modules live until exit: collections during the command skip them
    try:
        app()
    finally:
        # Exit fast (issue 13): at shutdown the interpreter runs one last garbage collection over
        # every object still alive, which with pandas and pyarrow loaded took 0.1-0.5 s of a
        # backtest's wall. Freezing them skips that pass; everything the command wrote is already
        # closed and on disk (atomic writes), and the standard streams are still flushed at exit.
        gc.freeze()


if __name__ == "__main__":
    main()
