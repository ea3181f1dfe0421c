"""``perpbot run``: the live runtime (live, demo or a custom venue such as ``perpbot simulate``).

Every refusal happens before the adapter sends an order: bad configuration, missing keys, live
without ``--live`` + ``PERPBOT_LIVE=yes``, a second run on the same journal, a journal of a newer
format, a model that does not verify. Each is one line on stderr, exit status 2.
SIGINT/SIGTERM stop it gracefully (protective orders stay on the exchange); exit status 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from perpbot.cli.common import config_from_env, select_symbols, user_errors

if TYPE_CHECKING:
    from perpbot.runtime.live_view import LiveView


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _main(runtime: object) -> int:
    import asyncio

    from perpbot.runtime.app import Runtime, run_until_stopped

    assert isinstance(runtime, Runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = await run_until_stopped(runtime, stop)
    _say(f"perpbot {runtime.opts.mode}: stopped (protective orders stay on the exchange)")
    return code


def _live_view(symbols: tuple[str, ...], mode: str, quiet: bool) -> LiveView | None:
    """The rich live view when stdout is a terminal and ``--quiet`` is not given, else None."""
    from perpbot.runtime.live_view import LiveSnapshot, LiveView, view_wanted

    if not view_wanted(quiet, sys.stdout):
        return None
    from rich.console import Console

    return LiveView(LiveSnapshot.for_symbols(symbols, mode), Console())


def _logging(view: LiveView | None) -> None:
    """Log lines on stdout; above the live view (rich's handler) when the view is drawn."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if view is None:
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format=fmt)
        return
    from rich.logging import RichHandler

    handler = RichHandler(console=view.console, show_path=False)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", handlers=[handler])


def register(app: typer.Typer) -> None:
    _register_run(app)
    register_paper(app)


def _register_run(app: typer.Typer) -> None:
    @app.command("run")
    @user_errors
    def run(
        symbol: Annotated[str | None, typer.Option("--symbol", help="One symbol.")] = None,
        symbols: Annotated[str | None, typer.Option("--symbols", help="Symbols A,B.")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every symbol of SYMBOLS (the default).")] = False,
        live: Annotated[
            bool, typer.Option("--live", help="Trade real money (also needs PERPBOT_LIVE=yes).")
        ] = False,
        journal: Annotated[Path, typer.Option("--journal", help="The journal (SQLite).")] = Path(
            "logs/journal.sqlite3"
        ),
        model_dir: Annotated[Path, typer.Option("--model-dir", help="Models folder.")] = Path("models"),
        no_ml: Annotated[bool, typer.Option("--no-ml", help="Trade without the ML filter.")] = False,
        heartbeat: Annotated[float, typer.Option("--heartbeat", help="Heartbeat period (s).")] = 60.0,
        connect_attempts: Annotated[
            int, typer.Option("--connect-attempts", help="Give up after N failed connects (0 = never).")
        ] = 0,
        quiet: Annotated[bool, typer.Option("--quiet", help="No live view (off anyway on a pipe).")] = False,
    ) -> None:
        """Run one bot per symbol against Binance (BINANCE_ENV) until SIGINT/SIGTERM."""
        from perpbot.exchange.binance.startup import credentials_from_config
        from perpbot.runtime.app import Runtime, RuntimeOptions
        from perpbot.runtime.guard import check_live_confirmation

        cfg = config_from_env()
        cfg = cfg.with_symbols(select_symbols(cfg, symbol, all_, symbols))
        check_live_confirmation(cfg, live, os.environ)
        credentials_from_config(cfg)  # keys required before anything connects
        mode = {"live": "LIVE", "demo": "DEMO"}.get(cfg.binance_env, cfg.binance_env)
        view = _live_view(cfg.symbols, mode, quiet)
        _logging(view)
        opts = RuntimeOptions(
            mode=mode,
            journal_path=journal,
            models_root=model_dir,
            use_ml=not no_ml,
            heartbeat_s=heartbeat,
            connect_attempts=connect_attempts or None,
        )
        import asyncio

        from perpbot.alerts.factory import build_notifier

        notifier = build_notifier(cfg, cfg.binance_env)  # tagged [DEMO] / [TESTNET]; live: none
        raise typer.Exit(asyncio.run(_main(Runtime(cfg, opts, out=_say, notifier=notifier, view=view))))


def register_paper(app: typer.Typer) -> None:
    @app.command("paper")
    @user_errors
    def paper(
        symbols: Annotated[str | None, typer.Option("--symbols", help="Symbols A,B.")] = None,
        data_dir: Annotated[
            Path | None,
            typer.Option("--data-dir", help="Recorded data; default: the demo's synthetic market."),
        ] = None,
        from_: Annotated[str | None, typer.Option("--from", help="Replay start (YYYY-MM-DD).")] = None,
        days: Annotated[int, typer.Option("--days", help="Days to replay.")] = 3,
        speed: Annotated[
            float, typer.Option("--speed", help="At most X candles per second (0 = fast).")
        ] = 0.0,
        out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("paper_report"),
        model_dir: Annotated[Path, typer.Option("--model-dir", help="Models folder.")] = Path("models"),
        no_ml: Annotated[bool, typer.Option("--no-ml", help="Trade without the ML filter.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", help="No live view (off anyway on a pipe).")] = False,
    ) -> None:
        """Paper replay: the live runtime against a `perpbot simulate` child process (alerts go to
        DISCORD_WEBHOOK_URL when set, tagged [PAPER])."""
        from perpbot.cli.common import env_with_dotenv, writable_folder
        from perpbot.errors import ConfigError
        from perpbot.runtime.paper import PaperOptions
        from perpbot.runtime.paper_report import replayed_market, report_lines, write_paper_report
        from perpbot.runtime.paper_run import run_paper

        cfg = config_from_env()
        cfg = cfg.with_symbols(select_symbols(cfg, None, False, symbols))
        if days < 1:
            raise ConfigError(f"--days={days}: need at least one day")
        if not speed >= 0:
            raise ConfigError(f"--speed={speed}: must be >= 0")
        if data_dir is not None and not data_dir.is_dir():
            raise ConfigError(f"--data-dir={data_dir}: not a folder")
        writable_folder(out, "--out")
        journal = out / "journal.sqlite3"
        if journal.exists():
            raise ConfigError(
                f"{journal}: exists; a paper replay starts from an empty journal (pick another --out)"
            )
        opts = PaperOptions(
            symbols=cfg.symbols,
            correlation=cfg.correlation.as_tuple(),
            data_dir=data_dir,
            from_=from_,
            days=days,
            speed=speed,
        )
        # Every symbol's data and the window are checked here, in one line each, before the
        # simulator child starts (a missing file, a --from outside the data, a bad date).
        replayed_market(opts)
        out.mkdir(parents=True, exist_ok=True)
        # Everything ``perpbot backtest`` / ``run`` read (``.env`` included: strategy, risk, the
        # Discord webhook), but no venue setting or key: paper trades on its simulator child.
        env = {k: v for k, v in env_with_dotenv().items() if not k.startswith("BINANCE")}
        import asyncio

        use_ml = not no_ml
        view = _live_view(cfg.symbols, "PAPER", quiet)
        res = asyncio.run(run_paper(env, opts, journal, model_dir, use_ml=use_ml, out=_say, view=view))
        for line in report_lines(res, write_paper_report(out, res, opts, use_ml=use_ml)):
            _say(line)
