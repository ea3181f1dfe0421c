"""The ``perpbot`` console script: one typer app, one module per command group.

Start-up (issue 13: ``perpbot backtest`` at its first candle within 0.4 s): ``main`` registers
only the module of the command being run when the first argument names one (typer turns every
registered command into a click command before parsing, and each module imports its own
dependencies), never imports typer's rich help formatter unless help or an error is printed, and
forks a backtest's chart worker before parsing (``draws_charts``), even before typer is imported
(the app is ``cli.app``). What typer itself costs was
measured: it imports pydantic and builds a pydantic adapter per non-flag option while parsing
(~0.1 s CPU); ``light_params`` coerces the str, Path and unset values of perpbot's options the way
those adapters do, without pydantic, so a command whose options are of those kinds never imports it.
``app`` (tests, ``--help``, anything else) holds every command.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

# Registration stays one module per command group. A command module imports only typer, rich and
# light perpbot modules at top level; pandas, pydantic-core, plotting, ML runtimes and ccxt are
# imported inside the command that runs (tests/test_cli_imports.py fails otherwise), so --help and
# every other command skip what they do not use (issue 13). Order = order in ``perpbot --help``.
MODULES = (
    "config_cmd",
    "data_cmds",
    "features_cmd",
    "train_cmds",
    "backtest_cmd",
    "demo_cmd",
    "inspect_cmds",
    "simulate_cmd",
    "optimize_cmd",
    "exchange_cmd",
    "run_cmds",
    "ops_cmds",
)
# Which module registers each top-level command (tests/test_cli_imports.py checks it against the
# registrations): ``perpbot <command> …`` needs that module alone.
COMMAND_MODULE = {
    "config": "config_cmd",
    "fetch": "data_cmds",
    "synth": "data_cmds",
    "features": "features_cmd",
    "train": "train_cmds",
    "tune": "train_cmds",
    "deploy": "train_cmds",
    "backtest": "backtest_cmd",
    "demo": "demo_cmd",
    "models": "inspect_cmds",
    "data": "inspect_cmds",
    "simulate": "simulate_cmd",
    "optimize": "optimize_cmd",
    "check-exchange": "exchange_cmd",
    "run": "run_cmds",
    "paper": "run_cmds",
    "status": "ops_cmds",
    "flatten": "ops_cmds",
    "kill-switch": "ops_cmds",
}


def draws_charts(argv: list[str]) -> bool:
    """``perpbot backtest …`` that will draw its charts (not ``--walk-forward``, not help): its
    chart worker is forked before the command line is parsed (``chart_pool.start_early``). A
    guess from the raw arguments is enough: a wrong one only starts or skips the early worker."""
    if not argv or argv[0] != "backtest":
        return False
    return not any(a in ("-h", "--help") or a.startswith("--walk-forward") for a in argv[1:])


def __getattr__(name: str) -> Any:
    # ``app``, ``build_app`` and ``app_for`` live in ``cli.app`` (typer), imported on first use.
    if name in ("app", "build_app", "app_for"):
        from perpbot.cli import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    gc.freeze()  # the CLI's modules live until exit: collections during the command skip them
    argv = sys.argv[1:]
    early = draws_charts(argv)
    if early:
        # Before typer and the command's modules are imported: the worker needs neither.
        from perpbot.backtest import chart_pool

        chart_pool.start_early()
    from perpbot.cli.app import app_for
    from perpbot.cli.common import PIPE_WIDTH

    gc.freeze()  # typer and the command's module too

    if not sys.stdout.isatty() and not os.environ.get("COLUMNS") and not os.environ.get("TERMINAL_WIDTH"):
        # Help on a pipe: as wide as the rest of the output (cli.common.PIPE_WIDTH), not 80. Through
        # the variable typer's help formatter reads when it loads (only to print help or an error),
        # so a command that prints neither never imports it.
        os.environ["TERMINAL_WIDTH"] = str(PIPE_WIDTH)
        if "typer.rich_utils" in sys.modules:
            sys.modules["typer.rich_utils"].MAX_WIDTH = PIPE_WIDTH
    try:
        app_for(argv)()
    finally:
        if early:
            chart_pool.discard_early()
        # Exit fast (issue 13): at shutdown the interpreter runs one last garbage collection over
        # every object still alive, which with pandas and pyarrow loaded took 0.1-0.5 s of a
        # backtest's wall. Freezing them skips that pass; everything the command wrote is already
        # closed and on disk (atomic writes), and the standard streams are still flushed at exit.
        gc.freeze()


if __name__ == "__main__":
    main()
