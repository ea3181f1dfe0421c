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

from perpbot.errors import ConfigError, PerpbotError


def _symbol_from_data_path(path: Path) -> str:
    """``data/xrpusdt/combined_15m.parquet`` → ``XRPUSDT`` (the folder names the symbol)."""
    from perpbot.symbols import normalize_symbol

    try:
        return normalize_symbol(path.parent.name, source="--data folder")
    except ConfigError:
        raise ConfigError(
            f"--data={path}: cannot tell the symbol from the folder name; pass --symbol"
        ) from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, help="Market parquet file (default data/<symbol>/combined_15m.parquet)."
    )
    ap.add_argument("--symbol", help="One symbol, e.g. XRPUSDT.")
    ap.add_argument("--all", action="store_true", help="Every configured symbol (SYMBOLS).")
    ap.add_argument(
        "--decay", type=float, default=None, help="Time-weight decay (default TIME_WEIGHT_DECAY)."
    )
    ap.add_argument("--wf", action="store_true", help="Add the purged walk-forward report.")
    ap.add_argument("--wf-splits", type=int, default=5, help="Walk-forward folds (default 5).")
    ap.add_argument("--tuned-params", type=Path, default=None, help="Tuned params JSON.")
    ap.add_argument("--backend", default="lgbm", help="lgbm | nn | mlx (alias of nn).")
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--model-dir", type=Path, default=Path("models"))
    ap.add_argument("--quiet", action="store_true", help="No progress bar.")
    args = ap.parse_args(argv)

    from perpbot.cli.common import config_from_env, err_console, progress, select_symbols
    from perpbot.cli.train_cmds import print_train_report, progress_callback
    from perpbot.ml.training import normalize_backend, train_symbol

    try:
        cfg = config_from_env()
        backend = normalize_backend(args.backend)
        if args.data is not None and args.all:
            raise ConfigError("--data and --all are mutually exclusive: one file holds one symbol")
        if args.data is not None and not args.symbol:
            symbols = [_symbol_from_data_path(args.data)]
        else:
            symbols = select_symbols(cfg, args.symbol, args.all)
        wf = args.wf_splits if args.wf else 0
        if args.wf and args.wf_splits < 1:
            raise ConfigError(f"--wf-splits={args.wf_splits}: must be >= 1")
        failed = 0
        with progress(args.quiet) as bar:
            cb = progress_callback(bar)
            for sym in symbols:
                try:
                    report = train_symbol(
                        sym,
                        data_dir=args.data_dir,
                        model_dir=args.model_dir,
                        config=cfg,
                        backend=backend,
                        wf=wf,
                        decay=args.decay,
                        tuned_params=args.tuned_params,
                        progress=cb,
                        data_file=args.data,
                    )
                    print_train_report(report)
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
