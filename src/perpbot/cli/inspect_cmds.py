"""``perpbot models`` and ``perpbot data``: what is on disk, per symbol, before anything runs.

Read-only and fast (no training, no feature computation). The logic is in
``perpbot.ml.inventory`` and ``perpbot.data.inventory``; this module only picks the symbols and
draws the tables (each fits 80 columns; problems are printed below as one line each).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich import box
from rich.table import Table

from perpbot.cli.common import (
    AllOpt,
    DataDirOpt,
    ModelDirOpt,
    SymbolOpt,
    SymbolsOpt,
    config_from_env,
    console,
    select_symbols,
    user_errors,
)


def pick_symbols(symbol: str | None, symbols: str | None, all_: bool) -> list[str]:
    """The shared ``--symbol`` / ``--symbols`` / ``--all`` rule (``common.select_symbols``)."""
    return select_symbols(config_from_env(), symbol, all_, symbols)


def _day(iso: str | None) -> str:
    return "-" if not iso else iso[:10]


def _ms_day(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%y-%m-%d")


def _short(state: str) -> str:
    """``available (97% non-zero)`` → ``yes``; ``all zero`` → ``zero``; ``absent`` as is."""
    return {"all zero": "zero", "absent": "absent", "n/a": "-"}.get(state, "yes")


def _table(title: str, columns: list[str]) -> Table:
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for k, col in enumerate(columns):
        t.add_column(col, no_wrap=True, justify="left" if k < 2 else "right")
    return t


def register(app: typer.Typer) -> None:
    @app.command("models")
    @user_errors
    def models_command(
        symbol: SymbolOpt = None,
        symbols: SymbolsOpt = None,
        all_: AllOpt = False,
        model_dir: ModelDirOpt = Path("models"),
    ) -> None:
        """Per symbol: backends, training window, gate verdict, threshold, age, schema match."""
        from perpbot.ml.inventory import models_inventory

        syms = pick_symbols(symbol, symbols, all_)
        rows = models_inventory(model_dir, syms, datetime.now(UTC))
        t = _table(
            f"Models in {model_dir}",
            ["symbol", "backend", "status", "trained from", "to", "gate", "thr", "age d", "schema"],
        )
        problems: list[str] = []
        for r in rows:
            status = "ok" if r.ok else ("missing" if not r.present else "REFUSED")
            gate = "-" if r.gate is None else r.gate.split(" ", 1)[0]
            t.add_row(
                r.symbol,
                r.backend,
                status,
                _day(r.train_start),
                _day(r.train_end),
                gate,
                "-" if r.threshold is None else f"{r.threshold:.3f}",
                "-" if r.age_days is None else f"{r.age_days:.1f}",
                r.schema,
            )
            if r.problem:
                problems.append(f"{r.symbol} {r.backend}: {r.problem}")
            if r.gate and " " in r.gate:
                problems.append(f"{r.symbol} {r.backend}: gate {r.gate}")
        console.print(t)
        for line in problems:
            console.print(line, markup=False, highlight=False)
        if not any(r.present for r in rows):
            console.print(f"no model in {model_dir} (train one: perpbot train --all)", markup=False)

    @app.command("data")
    @user_errors
    def data_command(
        symbol: SymbolOpt = None,
        symbols: SymbolsOpt = None,
        all_: AllOpt = False,
        data_dir: DataDirOpt = Path("data"),
    ) -> None:
        """Per symbol: coverage, gaps, synthetic or recorded, open interest and funding present."""
        from perpbot.data.inventory import data_status

        syms = pick_symbols(symbol, symbols, all_)
        t = _table(
            f"Market data in {data_dir} (15-minute candles, UTC)",
            ["symbol", "source", "from", "to", "days", "cover", "gaps", "OI", "fund."],
        )
        problems: list[str] = []
        for sym in syms:
            s = data_status(data_dir, sym)
            if not s.exists:
                t.add_row(sym, "missing", "-", "-", "-", "-", "-", "-", "-")
                problems.append(f"{sym}: no data file {s.path} (perpbot fetch --symbol {sym})")
                continue
            t.add_row(
                sym,
                s.source,
                _ms_day(s.first_ms),
                _ms_day(s.last_ms),
                f"{s.days:.0f}",
                "-" if s.coverage is None else f"{s.coverage:.1%}",
                str(s.gaps),
                _short(s.oi),
                _short(s.funding),
            )
            if s.gaps:
                problems.append(
                    f"{sym}: {s.gaps} gap(s), {s.missing} candle(s) missing, the largest {s.largest_gap_bars}"
                )
            if s.problem:
                problems.append(f"{sym}: not usable as is: {s.problem}")
            if s.oi == "all zero":
                problems.append(f"{sym}: open interest is all zero: the OI features carry no information")
        console.print(t)
        for line in problems:
            console.print(line, markup=False, highlight=False)
