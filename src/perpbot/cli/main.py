"""The ``perpbot`` console script: one typer app, one module per command group."""

from __future__ import annotations

import typer

from perpbot.cli import (
    backtest_cmd,
    config_cmd,
    data_cmds,
    demo_cmd,
    exchange_cmd,
    features_cmd,
    simulate_cmd,
    train_cmds,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="perpbot: multi-symbol Binance USDT-M perpetual bot with an ML entry filter.",
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """perpbot: multi-symbol Binance USDT-M perpetual bot with an ML entry filter."""


for module in (
    config_cmd,
    data_cmds,
    features_cmd,
    train_cmds,
    backtest_cmd,
    demo_cmd,
    simulate_cmd,
    exchange_cmd,
):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
