"""``perpbot config``: the effective configuration per symbol, secrets masked."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from perpbot.cli.common import config_from_env, console, select_symbols, user_errors


def register(app: typer.Typer) -> None:
    @app.command("config")
    @user_errors
    def config_command(
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Print the effective configuration per symbol (secrets masked)."""
        cfg = config_from_env()
        select_symbols(cfg, None, False)  # warns about overrides for symbols that are not traded
        view = cfg.masked()
        view["per_symbol"] = {s: cfg.params_for(s).as_dict() for s in cfg.symbols}
        if as_json:
            typer.echo(json.dumps(view, indent=2, sort_keys=True))
            return
        table = Table(title="perpbot configuration")
        table.add_column("setting")
        table.add_column("value")
        for key, value in view.items():
            if key != "per_symbol":
                table.add_row(key, str(value))
        console.print(table)
        sym = Table(title="per-symbol strategy parameters")
        cols = ["symbol", "atr_sl_mult", "atr_tp_mult", "signal_threshold", "adx_threshold", "vol_multiplier"]
        for c in cols:
            sym.add_column(c)
        for s, p in view["per_symbol"].items():
            sym.add_row(s, *(str(p[c]) for c in cols[1:]))
        console.print(sym)
