#!/usr/bin/env python3
"""Train a symbol's LightGBM (or neural) entry filter — SPEC §7.2 flags, same code as ``perpbot train``.

    scripts/train_model.py --symbol XRPUSDT --wf --wf-splits 5
    scripts/train_model.py --all --backend nn
    scripts/train_model.py --data data/xrpusdt/combined_15m.parquet --decay 2.0

``--wf`` adds the purged walk-forward report (``--wf-splits`` folds, default 5) before the final model
is trained; without it only the final model is trained (SPEC "train" mode). Both save the model,
its metadata and a training-log entry under ``<model-dir>/<symbol>/``. Bad input prints one line
and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perpbot.cli.common import add_symbol_args, run_script


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_symbol_args(ap)
    ap.add_argument(
        "--decay", type=float, default=None, help="Time-weight decay (default TIME_WEIGHT_DECAY)."
    )
    ap.add_argument("--wf", action="store_true", help="Add the purged walk-forward report.")
    ap.add_argument("--wf-splits", type=int, default=5, help="Walk-forward folds (default 5).")
    ap.add_argument("--tuned-params", type=Path, default=None, help="Tuned params JSON.")
    ap.add_argument("--backend", default="lgbm", help="lgbm | nn | mlx (alias of nn).")
    args = ap.parse_args(argv)
    return run_script(lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    from perpbot.cli.common import config_from_env, script_symbols
    from perpbot.cli.train_cmds import print_train_report, run_symbols
    from perpbot.errors import ConfigError
    from perpbot.ml.backends import normalize_backend
    from perpbot.ml.training import ProgressFn, train_symbol

    cfg = config_from_env()
    backend = normalize_backend(args.backend)
    symbols = script_symbols(cfg, args)
    if args.wf and args.wf_splits < 1:
        raise ConfigError(f"--wf-splits={args.wf_splits}: must be >= 1")

    def job(sym: str, cb: ProgressFn) -> None:
        report = train_symbol(
            sym,
            data_dir=args.data_dir,
            model_dir=args.model_dir,
            config=cfg,
            backend=backend,
            wf=args.wf_splits if args.wf else 0,
            decay=args.decay,
            tuned_params=args.tuned_params,
            progress=cb,
            data_file=args.data,
        )
        print_train_report(report)

    return 2 if run_symbols(symbols, args.quiet, job) else 0


if __name__ == "__main__":
    sys.exit(main())
