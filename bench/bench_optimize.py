"""``perpbot optimize`` throughput (issue 12 §3): trials per minute on the three real symbols with
K = 5 folds, for 1 and 2 local worker processes. Target: ≥ 60 trials/min with 2 workers.

Each configuration is one real ``perpbot optimize --symbols XRPUSDT,TRXUSDT,DOGEUSDT --folds 5
--sampler qmc --workers W`` run (fresh SQLite study in a temporary folder, ML off, defaults of the
CLI otherwise). Two figures per run:

* ``steady``: finished trials / (last trial end − first trial start), read from the study — the
  throughput of the trial loop once the workers are up;
* ``wall``: finished trials / the whole command's wall time (imports, data loading, the
  per-symbol precompute, child start-up, the report and charts included).

The scaling ratio is steady(2 workers) / steady(1 worker). The machine is shared; the figures are
medians over ``--repeat`` runs. Data: ``../shared/data``; without it the bench says so and stops.

Not a test: ``python bench/bench_optimize.py [--trials N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data"
SYMBOLS = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")
TARGET = 60.0


def one_run(workers: int, trials: int, work: Path) -> tuple[float, float, int]:
    """(steady trials/min, wall trials/min, finished trials) of one optimize command."""
    import optuna

    out = work / f"w{workers}-{time.monotonic_ns()}"
    cmd = [
        sys.executable,
        "-m",
        "perpbot.cli.main",
        "optimize",
        *("--symbols", ",".join(SYMBOLS), "--folds", "5", "--trials", str(trials)),
        *("--sampler", "qmc", "--workers", str(workers), "--no-promote"),
        *("--data-dir", str(REAL_DATA), "--out", str(out)),
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=work, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    done = []
    for sym in SYMBOLS:
        st = optuna.load_study(
            study_name=f"perpbot-optimize-{sym}", storage=f"sqlite:///{out / 'optimize.sqlite3'}"
        )
        done += [t for t in st.trials if t.datetime_complete is not None and t.state.is_finished()]
    first = min(t.datetime_start for t in done if t.datetime_start is not None)
    last = max(t.datetime_complete for t in done if t.datetime_complete is not None)
    span = (last - first).total_seconds()
    return len(done) / span * 60.0, len(done) / wall * 60.0, len(done)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40, help="trials per symbol per run")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not all((REAL_DATA / s.lower() / "combined_15m.parquet").is_file() for s in SYMBOLS):
        print(f"bench_optimize: {REAL_DATA} lacks the three real symbols; nothing measured")
        return 0
    results: dict[int, list[tuple[float, float, int]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench_optimize_") as tmp:
        for _ in range(args.repeat):
            for w in (1, 2):
                results[w].append(one_run(w, args.trials, Path(tmp)))
    med = {
        w: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
        for w, rs in results.items()
    }
    n = results[1][0][2]
    print(f"perpbot optimize, 3 real symbols, K=5, {n} trials per run, median of {args.repeat}")
    for w in (1, 2):
        runs = ", ".join(f"{s:.0f}" for s, _, _ in results[w])
        print(
            f"  {w} worker(s): steady {med[w][0]:.1f} trials/min (runs: {runs}); "
            f"wall {med[w][1]:.1f} trials/min"
        )
    ratio = med[2][0] / med[1][0]
    print(f"  scaling ratio (steady, 2 vs 1): {ratio:.2f}")
    status = "meets" if med[2][0] >= TARGET else "MISSES"
    print(f"  target >= {TARGET:.0f} trials/min with 2 workers (steady): {status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
