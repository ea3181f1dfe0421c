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

from perpbot.cli.common import add_symbol_args, run_script


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_symbol_args(ap)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--train-ratio", type=float, default=0.6)
    ap.add_argument("--min-recall", type=float, default=0.35)
    ap.add_argument("--no-baseline", action="store_true", help="Skip the baseline CV (never promotes).")
    args = ap.parse_args(argv)
    return run_script(lambda: _tune(args))


def _tune(args: argparse.Namespace) -> int:
    from perpbot.cli.common import config_from_env, script_symbols
    from perpbot.cli.train_cmds import print_tune_report, run_symbols
    from perpbot.ml.training import ProgressFn
    from perpbot.ml.tuning import tune_symbol

    cfg = config_from_env()
    symbols = script_symbols(cfg, args)

    def job(sym: str, cb: ProgressFn) -> None:
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

    return 2 if run_symbols(symbols, args.quiet, job) else 0


if __name__ == "__main__":
    sys.exit(main())
