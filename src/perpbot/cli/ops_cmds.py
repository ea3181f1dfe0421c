"""Operator commands (issue 10 §1): ``perpbot status``, ``perpbot flatten``, ``perpbot kill-switch
reset``. They act through the same journal, adapter, bot and risk rules as ``perpbot run``.

Bad input (an unknown symbol, no journal, a journal of a newer perpbot, live without its
confirmation, flatten while a run owns the journal) is one line on stderr, exit status 2.
"""

from __future__ import annotations

# asyncio (with ssl, ~40 ms) only inside the commands: this module registers ``status`` and
# ``flatten``, and ``perpbot --help`` imports it to list them (issue 13, imports).
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from perpbot.cli.common import config_from_env, select_symbols, user_errors

if TYPE_CHECKING:
    from perpbot.config import AppConfig

JournalOpt = Annotated[Path, typer.Option("--journal", help="The journal (SQLite) of the runs.")]
DEFAULT_JOURNAL = Path("logs/journal.sqlite3")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _mode(cfg: AppConfig) -> str:
    return {"live": "LIVE", "demo": "DEMO"}.get(cfg.binance_env, cfg.binance_env)


def _known(cfg: AppConfig, symbols: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    from perpbot.errors import ConfigError

    for s in symbols:
        if s not in cfg.symbols and s not in extra:
            raise ConfigError(f"--symbol {s}: not a configured symbol (SYMBOLS={','.join(cfg.symbols)})")
    return symbols


def register(app: typer.Typer) -> None:
    _register_status(app)
    _register_flatten(app)
    ks = typer.Typer(help="Kill switches (SPEC §13 row 27).", no_args_is_help=True)
    _register_kill_switch(ks)
    app.add_typer(ks, name="kill-switch")


def _register_status(app: typer.Typer) -> None:
    @app.command("status")
    @user_errors
    def status(
        symbol: Annotated[str | None, typer.Option("--symbol", help="One symbol.")] = None,
        symbols: Annotated[str | None, typer.Option("--symbols", help="Symbols A,B.")] = None,
        journal: JournalOpt = DEFAULT_JOURNAL,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON document for scripts.")] = False,
    ) -> None:
        """Positions (exchange vs journal), protection, today's PnL, kill switches. Read only."""
        import asyncio

        from perpbot.exchange.binance.startup import connect_from_config, credentials_from_config
        from perpbot.runtime.ops_journal import lock_holder, open_read_only
        from perpbot.runtime.ops_status import gather_status, status_lines

        cfg = config_from_env()
        syms = _known(cfg, select_symbols(cfg, symbol, False, symbols))
        open_read_only(journal).close()  # no journal / newer format: refused before connecting
        credentials_from_config(cfg)
        st = asyncio.run(
            gather_status(
                cfg.with_symbols(syms),
                journal,
                syms,
                mode=_mode(cfg),
                running=lock_holder(journal) is not None,
                connect=connect_from_config,
                now_ms=int(time.time() * 1000),
            )
        )
        if as_json:
            _say(json.dumps(st.to_json(), sort_keys=True))
        else:
            for line in status_lines(st):
                _say(line)


def _register_flatten(app: typer.Typer) -> None:
    @app.command("flatten")
    @user_errors
    def flatten(
        symbol: Annotated[str | None, typer.Option("--symbol", help="The symbol to flatten.")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every configured symbol.")] = False,
        journal: JournalOpt = DEFAULT_JOURNAL,
        yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
        wait: Annotated[
            float, typer.Option("--wait", help="With a run: seconds to wait for the running bot's answer.")
        ] = 120.0,
        live: Annotated[
            bool, typer.Option("--live", help="Real money (also needs PERPBOT_LIVE=yes), as for run.")
        ] = False,
    ) -> None:
        """Reduce-only market close of the position, then cancel both order books; booked once."""
        import asyncio

        from perpbot.errors import ConfigError
        from perpbot.exchange.binance.startup import connect_from_config, credentials_from_config
        from perpbot.runtime.guard import check_live_confirmation
        from perpbot.runtime.ops_desk import request_flatten
        from perpbot.runtime.ops_flatten import flatten as run_flatten
        from perpbot.runtime.ops_journal import lock_holder, open_read_only

        if not symbol and not all_:
            raise ConfigError("flatten needs --symbol S or --all")
        cfg = config_from_env()
        syms = _known(cfg, select_symbols(cfg, symbol, all_))
        check_live_confirmation(cfg, live, os.environ)
        credentials_from_config(cfg)
        open_read_only(journal).close()
        if wait <= 0:
            raise ConfigError(f"--wait={wait}: must be > 0")
        holder = lock_holder(journal)
        if not yes:
            question = (
                f"Close {', '.join(syms)} on Binance {cfg.binance_env} (reduce-only MARKET) and cancel "
                "their orders?"
            )
            if not typer.confirm(question, default=False):
                _say("flatten cancelled; nothing was sent")
                raise typer.Exit(1)
        if holder is not None:  # the running bot closes and books (runtime/ops_desk.py says why)
            _say(f"a perpbot run ({holder}) owns {journal}: the request goes to the running bot")
            answers = asyncio.run(request_flatten(journal, syms, wait))
            for a in answers:
                _say(f"{a.symbol}: {a.message}")
            _say("note: the running bot trades on; it may enter again on its next signal")
            raise typer.Exit(0 if all(a.status == "flat" for a in answers) else 1)
        results = asyncio.run(
            run_flatten(cfg.with_symbols(syms), journal, syms, connect=connect_from_config, out=_say)
        )
        for r in results:
            _say(r.line())
        raise typer.Exit(1 if any(r.still_open for r in results) else 0)


def _register_kill_switch(ks: typer.Typer) -> None:
    @ks.command("reset")
    @user_errors
    def reset(
        symbol: Annotated[str, typer.Option("--symbol", help="The symbol whose kill switch to clear.")],
        journal: JournalOpt = DEFAULT_JOURNAL,
    ) -> None:
        """Clear a tripped kill switch in the journal (audited); a running bot takes it at its
        next candle of the symbol, a new run at start-up."""
        from perpbot.runtime.ops_journal import JournalReader, reset_kill_switch

        cfg = config_from_env()
        (sym,) = select_symbols(cfg, symbol, False)
        with JournalReader(journal) as r:
            seen = tuple(r.symbols())
        _known(cfg, [sym], seen)
        _say(reset_kill_switch(journal, sym, int(time.time() * 1000)))
