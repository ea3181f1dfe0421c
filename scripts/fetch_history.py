#!/usr/bin/env python3
"""SPEC §7.1 ``scripts/fetch_history.py``: the historical flags, the same code as ``perpbot fetch``.

Differences from the design point, on purpose:

* the correlation candles are always stored under the *role* suffixes ``_btc``/``_eth``
  (SPEC §13 row 29). ``--symbols A B C`` means primary A with B in the BTC role and C in the ETH
  role; ``--symbols A`` (or ``--symbol A``) uses ``CORRELATION_SYMBOLS``;
* the default output is ``<data-dir>/<symbol>/combined_15m.parquet`` in both modes, because that
  is where every reader looks;
* only the 15m interval exists in this project; anything else is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perpbot.cli.common import config_from_env, progress, run_script, select_symbols
from perpbot.config import CorrelationMap
from perpbot.data.fetch import FetchOptions, fetch_history
from perpbot.data.history_client import resolve_base_url
from perpbot.errors import ConfigError
from perpbot.symbols import normalize_symbol


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", nargs="+", default=["XRPUSDT"], help="primary [btc-role eth-role]")
    p.add_argument("--symbol", help="one primary symbol; correlation from CORRELATION_SYMBOLS")
    p.add_argument("--all", action="store_true", help="every symbol of SYMBOLS")
    p.add_argument("--interval", default="15m")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--output", type=Path, help="output parquet (one primary only)")
    p.add_argument("--no-oi", action="store_true", help="skip open-interest history")
    p.add_argument("--no-upsert", action="store_true", help="overwrite instead of merging")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--base-url", help="exchange base URL (default BINANCE_FAPI_URL, else Binance)")
    p.add_argument("--quiet", action="store_true")
    return p


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = config_from_env()
    if args.interval != "15m":
        raise ConfigError(f"--interval={args.interval!r}: only 15m is supported")
    correlation = cfg.correlation
    if args.symbol or args.all:
        symbols = select_symbols(cfg, args.symbol, args.all)
    else:
        given = [normalize_symbol(s, source="--symbols") for s in args.symbols]
        if len(given) not in (1, 3):
            raise ConfigError(
                f"--symbols={' '.join(args.symbols)}: give a primary, optionally with btc- and eth-role"
            )
        symbols = given[:1]
        if len(given) == 3:
            correlation = CorrelationMap(btc=given[1], eth=given[2])
    options = FetchOptions(
        days=args.days, correlation=correlation, with_oi=not args.no_oi, upsert=not args.no_upsert
    )
    with progress(args.quiet) as bar:
        results = fetch_history(
            symbols,
            data_dir=args.data_dir,
            output=args.output,
            options=options,
            base_url=resolve_base_url(args.base_url, cfg.fapi_url),
            progress=bar,
        )
    for r in results:
        print(f"{r.symbol}: {r.rows} rows ({r.first} → {r.last}) → {r.path}")
    return 0


def main() -> int:
    return run_script(run)


if __name__ == "__main__":
    sys.exit(main())
