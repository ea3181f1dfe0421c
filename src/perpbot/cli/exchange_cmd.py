"""``perpbot check-exchange``: connect to the configured Binance venue and run the start-up checks.

The same path live trading starts with (``exchange.binance.startup``), without trading: it shows
that the keys, the account mode and the symbols are usable before a bot is started.
"""

from __future__ import annotations

import sys

import typer

from perpbot.cli.common import config_from_env, console, user_errors


def register(app: typer.Typer) -> None:
    @app.command("check-exchange")
    @user_errors
    def check_exchange(
        attempts: int = typer.Option(
            5, "--attempts", help="Connection attempts while unreachable (0 = forever)."
        ),
    ) -> None:
        """Check keys, account mode and symbols on the venue of BINANCE_ENV (no order is sent)."""
        import asyncio

        from perpbot.exchange.binance.startup import connect_from_config

        cfg = config_from_env()

        def report(line: str) -> None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

        async def run() -> float:
            ex, balance = await connect_from_config(
                cfg, attempts=attempts or None, report=report, base_delay_s=0.5
            )
            await ex.close()
            return balance

        balance = asyncio.run(run())
        symbols = ", ".join([*cfg.symbols, *cfg.correlation.as_tuple()])
        console.print(
            f"binance {cfg.binance_env}: keys, one-way mode, single-asset mode and symbols ({symbols}) OK; "
            f"USDT wallet balance {balance:.2f}",
            highlight=False,
            soft_wrap=True,
        )
