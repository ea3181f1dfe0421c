"""Training benchmark (issue 2 target: ``perpbot train --symbol XRPUSDT --wf 5`` < 60 s on 2 cores).

Runs the real console command end to end (process start, imports, data load, features, dataset,
five purged walk-forward folds, final model, ONNX export, atomic save) on
``../shared/data/xrpusdt/combined_15m.parquet`` — linked, never copied, into a temporary data folder,
with a temporary models folder, so nothing in the repository changes. When the real data is
absent it falls back to a 365-day synthetic XRPUSDT market with relaxed rule parameters (the
synthetic market fires too few default signals to train) and says so.

Not a test: run ``python bench/bench_train.py [--repeat N]``. Prints wall-clock seconds per run
and the median, plus the in-process time reported by the trainer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SYMBOL = "XRPUSDT"
TARGET_S = 60.0
LOOSE_ENV = {"SIGNAL_THRESHOLD": "2", "ADX_THRESHOLD": "0", "VOL_MULTIPLIER": "1.0"}


def perpbot_cmd() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m perpbot.cli.main``."""
    exe = Path(sys.executable).with_name("perpbot")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "perpbot.cli.main"]


def prepare(data_dir: Path) -> tuple[str, dict[str, str]]:
    """Link the real file into ``data_dir`` (or write a synthetic one); return (label, extra env)."""
    from perpbot.data.schema import data_path

    target = data_path(data_dir, SYMBOL)
    target.parent.mkdir(parents=True, exist_ok=True)
    real = REAL_DATA / SYMBOL.lower() / "combined_15m.parquet"
    if real.is_file():
        target.symlink_to(real)
        return f"real {real}", {}
    from perpbot.data.store import save_market
    from perpbot.data.synth import synth_market

    save_market(synth_market(365, 7, symbol=SYMBOL), target)
    return "SYNTHETIC 365 days (real data absent; relaxed rule parameters)", LOOSE_ENV


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--wf", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="perpbot_bench_train_"))
    try:
        label, extra_env = prepare(work / "data")
        env = {**os.environ, **extra_env, "COLUMNS": "120"}
        cmd = [
            *perpbot_cmd(),
            "train",
            "--symbol",
            SYMBOL,
            "--wf",
            str(args.wf),
            "--data-dir",
            str(work / "data"),
            "--model-dir",
            str(work / "models"),
            "--quiet",
        ]
        print(f"data: {label}")
        print(f"cmd:  {' '.join(cmd)}  (cwd {work}, {os.cpu_count()} CPUs visible)")
        times: list[float] = []
        last = ""
        for i in range(args.repeat):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
            elapsed = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stdout + proc.stderr, file=sys.stderr)
                return proc.returncode
            times.append(elapsed)
            last = proc.stdout
            print(f"run {i + 1}: {elapsed:.2f} s wall (whole process)")
        med = statistics.median(times)
        print(last.rstrip())
        verdict = "OK" if med < TARGET_S else "OVER TARGET"
        print(
            f"perpbot train --symbol {SYMBOL} --wf {args.wf}: median {med:.2f} s wall over {len(times)} runs "
            f"(target < {TARGET_S:.0f} s) {verdict}"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
