#!/usr/bin/env python3
"""Optuna search for the LightGBM filter — SPEC §7.4 flags, same code as ``perpbot tune``.

    scripts/tune_hyperparams.py --symbol XRPUSDT --trials 50 --folds 5 --min-recall 0.35
    scripts/tune_hyperparams.py --all --no-baseline

The study lives in ``<model-dir>/<symbol>/optuna.sqlite3`` and resumes when interrupted
(``--trials`` is the total number of finished trials wanted). Results go to
``<model-dir>/<symbol>/tune_results_<YYYYMMDD_HHMMSS>.json``; the best parameters are promoted to
``active_lgbm_params.json`` only under the rule documented in ``perpbot.ml.tuning`` and printed
with the result. ``--no-baseline`` never promotes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perpbot.errors import ConfigError, PerpbotError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, help="Market parquet file (default data/<symbol>/combined_15m.parquet)."
    )
    ap.add_argument("--symbol", help="One symbol, e.g. XRPUSDT.")
    ap.add_argument("--all", action="store_true", help="Every configured symbol (SYMBOLS).")
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--train-ratio", type=float, default=0.6)
    ap.add_argument("--min-recall", type=float, default=0.35)
    ap.add_argument("--no-baseline", action="store_true", help="Skip the baseline CV (never promotes).")
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--model-dir", type=Path, default=Path("models"))
    ap.add_argument("--quiet", action="store_true", help="No progress bar.")
    args = ap.parse_args(argv)

    from perpbot.cli.common import config_from_env, err_console, progress, select_symbols
    from perpbot.cli.train_cmds import print_tune_report, progress_callback
    from perpbot.ml.tuning import tune_symbol

    try:
        cfg = config_from_env()
        if args.data is not None and args.all:
            raise ConfigError("--data and --all are mutually exclusive: one file holds one symbol")
        if args.data is not None and not args.symbol:
            from perpbot.symbols import normalize_symbol

            symbols = [normalize_symbol(args.data.parent.name, source="--data folder (or pass --symbol)")]
        else:
            symbols = select_symbols(cfg, args.symbol, args.all)
        failed = 0
        with progress(args.quiet) as bar:
            cb = progress_callback(bar)
            for sym in symbols:
                try:
                    report = tune_symbol(
                        sym,
                        data_dir=args.data_dir,
                        model_dir=args.model_dir,
                        config=cfg,
                        trials=args.trials,
                        folds=args.folds,
                        min_recall=args.min_recall,
                        baseline=not args.no_baseline,
                        progress=cb,
                        train_ratio=args.train_ratio,
                        data_file=args.data,
                    )
                    print_tune_report(report)
                except PerpbotError as exc:
                    if len(symbols) == 1:
                        raise
                    failed += 1
                    err_console.print(f"error: {exc}", markup=False, highlight=False)
        return 2 if failed else 0
    except PerpbotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
