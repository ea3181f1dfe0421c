"""``perpbot fetch`` (Binance history, SPEC §7.1) and ``perpbot synth`` (deterministic synthetic market).

The fetch module (and ccxt with it) is imported inside the command: ccxt takes about half a second
to import, which every other ``perpbot`` command should not pay.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from perpbot.cli.common import (
    AllOpt,
    DataDirOpt,
    QuietOpt,
    SymbolOpt,
    SymbolsOpt,
    config_from_env,
    console,
    progress,
    select_symbols,
    user_errors,
    writable_folder,
)
from perpbot.data.schema import data_path
from perpbot.errors import ConfigError

FetchDaysOpt = Annotated[int, typer.Option("--days", help="History length in days.")]
SynthDaysOpt = Annotated[int, typer.Option("--days", help="Synthetic history length in days.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same market).")]
NoOiOpt = Annotated[bool, typer.Option("--no-oi", help="Skip open-interest history.")]
NoUpsertOpt = Annotated[bool, typer.Option("--no-upsert", help="Overwrite instead of merging.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing data files.")]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", help="Exchange base URL (default: BINANCE_FAPI_URL, else Binance)."),
]


def _check_days(days: int) -> None:
    if days < 1:
        raise ConfigError(f"--days={days}: must be >= 1")


def register(app: typer.Typer) -> None:
    @app.command("fetch")
    @user_errors
    def fetch_command(
        symbol: SymbolOpt = None,
        symbols_: SymbolsOpt = None,
        all_: AllOpt = False,
        days: FetchDaysOpt = 365,
        no_oi: NoOiOpt = False,
        no_upsert: NoUpsertOpt = False,
        data_dir: DataDirOpt = Path("data"),
        base_url: BaseUrlOpt = None,
        quiet: QuietOpt = False,
    ) -> None:
        """Download 15-minute history (+ BTC/ETH roles, funding, open interest) into the data folder."""
        from perpbot.backtest.prepare import prime_inputs
        from perpbot.data.fetch import FetchOptions, fetch_history
        from perpbot.data.history_client import resolve_base_url

        cfg = config_from_env()
        symbols = select_symbols(cfg, symbol, all_, symbols_)
        _check_days(days)
        writable_folder(data_dir, "--data-dir")
        options = FetchOptions(
            days=days, correlation=cfg.correlation, with_oi=not no_oi, upsert=not no_upsert
        )
        url = resolve_base_url(base_url, cfg.fapi_url)
        with progress(quiet) as bar:
            results = fetch_history(symbols, data_dir=data_dir, options=options, base_url=url, progress=bar)
        prime_inputs([r.symbol for r in results], data_dir, cfg.params_for)
        for r in results:
            console.print(
                f"{r.symbol}: {r.downloaded} candles downloaded, {r.rows} in file "
                f"({r.first:%Y-%m-%d %H:%M} → {r.last:%Y-%m-%d %H:%M} UTC), "
                f"{r.funding_events} funding events, {r.oi_rows} candles with OI → {r.path}",
                highlight=False,
            )

    @app.command("synth")
    @user_errors
    def synth_command(
        symbol: SymbolOpt = None,
        symbols_: SymbolsOpt = None,
        all_: AllOpt = False,
        days: SynthDaysOpt = 120,
        seed: SeedOpt = 7,
        data_dir: DataDirOpt = Path("data"),
        force: ForceOpt = False,
        quiet: QuietOpt = False,
    ) -> None:
        """Write a deterministic synthetic market (same schema as fetched data) per symbol.

        An existing data file (perhaps a real recording) is never overwritten without --force;
        the files are marked synthetic, and every command that loads one says so.
        """
        from perpbot.backtest.prepare import prime_inputs
        from perpbot.data.store import save_market, synthetic_origin
        from perpbot.data.synth import synth_market

        cfg = config_from_env()
        symbols = select_symbols(cfg, symbol, all_, symbols_)
        _check_days(days)
        writable_folder(data_dir, "--data-dir")
        if not force:
            for sym in symbols:
                path = data_path(data_dir, sym)
                if path.exists():
                    kind = "a synthetic market" if synthetic_origin(path) else "possibly recorded data"
                    raise ConfigError(f"{path} already exists ({kind}); pass --force to overwrite it")
        written: list[str] = []
        with progress(quiet) as bar:
            task = bar.add_task("synth", total=len(symbols))
            for sym in symbols:
                frame = synth_market(days, seed, symbol=sym)
                path = save_market(
                    frame,
                    data_path(data_dir, sym),
                    closed_through_ms=int(frame.index.asi8[-1]),
                    synthetic=f"perpbot synth, seed {seed}, {days} days",
                )
                written.append(f"{sym}: {len(frame)} synthetic candles (seed {seed}) → {path}")
                bar.advance(task)
        prime_inputs(symbols, data_dir, cfg.params_for)
        for line in written:
            console.print(line, highlight=False)
