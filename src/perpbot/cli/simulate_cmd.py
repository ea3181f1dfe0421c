"""``perpbot simulate``: serve Binance USDT-M's REST and WebSocket protocol over the matching engine.

Prints exactly one line on stdout when ready, ``perpbot simulate listening on http://HOST:PORT
(ws://HOST:PORT)``, then serves until SIGINT or SIGTERM and exits 0. Numeric options are read as
text and checked here so that a bad value is the usual one-line error with exit status 2.
"""

from __future__ import annotations

import math
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from perpbot.cli.common import (
    AllOpt,
    SymbolOpt,
    SymbolsOpt,
    config_from_env,
    err_console,
    select_symbols,
    user_errors,
)
from perpbot.errors import ConfigError

if TYPE_CHECKING:
    from perpbot.simulator.config import SimulatorConfig


def _number(name: str, text: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r}: not a{'n integer' if kind is int else ' number'}") from None
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{name}={text!r}: not a number")
    return value


async def _serve(cfg: SimulatorConfig) -> None:
    import asyncio

    from perpbot.simulator.server import SimServer

    srv = SimServer(cfg)
    port = await srv.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = srv.cfg.host
    sys.stdout.write(f"perpbot simulate listening on http://{host}:{port} (ws://{host}:{port})\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await srv.stop()


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    @user_errors
    def simulate(
        symbol: SymbolOpt = None,
        symbols: SymbolsOpt = None,
        all_: AllOpt = False,
        data_dir: Annotated[
            Path | None,
            typer.Option("--data-dir", help="Recorded data; default: the demo's synthetic market."),
        ] = None,
        from_: Annotated[
            str | None, typer.Option("--from", help="Replay start (YYYY-MM-DD or epoch ms).")
        ] = None,
        days: Annotated[str, typer.Option("--days", help="Days to replay.")] = "30",
        speed: Annotated[
            str, typer.Option("--speed", help="Candles per second of wall time; 0 = only POST /sim/advance.")
        ] = "1",
        balance: Annotated[str, typer.Option("--balance", help="Starting USDT wallet balance.")] = "1000",
        host: Annotated[
            str, typer.Option("--host", help="Address to bind (loopback by default).")
        ] = "127.0.0.1",
        port: Annotated[str, typer.Option("--port", help="Port; 0 = any free port.")] = "0",
        allow_remote: Annotated[
            bool, typer.Option("--allow-remote", help="Allow a non-loopback --host.")
        ] = False,
        api_key: Annotated[str | None, typer.Option("--api-key", help="API key clients must send.")] = None,
        api_secret: Annotated[
            str | None, typer.Option("--api-secret", help="HMAC secret clients sign with.")
        ] = None,
        faults: Annotated[
            Path | None, typer.Option("--faults", help="Faults to inject at start (JSON).")
        ] = None,
        ws_max_age: Annotated[
            str, typer.Option("--ws-max-age", help="Seconds before a WebSocket is closed (Binance: 86400).")
        ] = "86400",
        replay_limits: Annotated[
            bool,
            typer.Option(
                "--replay-limits", help="Count request limits on replay time (paper), not wall time."
            ),
        ] = False,
    ) -> None:
        """Binance USDT-M protocol simulator (REST + WebSocket) over the backtest's matching engine."""
        from perpbot.simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimulatorConfig
        from perpbot.simulator.market import parse_time

        n_days = int(_number("--days", days, int))
        app_cfg = config_from_env()  # SYMBOLS and the backtest's costs (TAKER_FEE, ...)
        cfg = SimulatorConfig(
            symbols=tuple(select_symbols(app_cfg, symbol, all_, symbols)),
            data_dir=data_dir,
            from_ms=parse_time(from_) if from_ else None,
            days=n_days,
            speed=float(_number("--speed", speed, float)),
            balance=float(_number("--balance", balance, float)),
            host=host,
            port=int(_number("--port", port, int)),
            allow_remote=allow_remote,
            api_key=api_key or DEFAULT_API_KEY,
            api_secret=api_secret or DEFAULT_API_SECRET,
            faults_file=faults,
            ws_max_age_s=float(_number("--ws-max-age", ws_max_age, float)),
            replay_limits=replay_limits,
            taker_fee=app_cfg.taker_fee,
            maker_fee=app_cfg.maker_fee,
            slippage_bps=app_cfg.slippage_bps,
        )
        if data_dir is not None and not data_dir.is_dir():
            raise ConfigError(f"--data-dir={data_dir}: not a folder")
        if api_key is None or api_secret is None:
            # Public, fixed test credentials (not secrets): printed so a client can be configured.
            err_console.print(f"simulate: API key {cfg.api_key}", highlight=False, soft_wrap=True)
            if api_secret is None:
                err_console.print(f"simulate: API secret {cfg.api_secret}", highlight=False, soft_wrap=True)
        import asyncio

        asyncio.run(_serve(cfg))
