"""The long chaos run (issue 10 §4): the CI chaos test over many more simulated days.

A paper replay of three symbols against ``perpbot simulate``, every fault shape of
``chaos_plan.FAULTS`` injected at seeded random candles (each once in the first 40 % of the run,
then ``--faults-per-day`` seeded picks), the bot process SIGKILLed at seeded random points
(default one per 3 days) and restarted on its journal, a tripped kill switch reset by the
operator after a day; then the same invariants as ``tests/chaos``
(``perpbot.runtime.chaos_check``), plus the figures: candles per second, kills, kill-switch
trips, faults by shape (injected / hit / evidence seen), executions, trades, longest unprotected
span. The artefacts (bot logs, journal, ``audit.json``, ``faults.json``) stay in ``--out``. Exit
status 1 when an invariant broke.

Not a test: ``python bench/chaos.py --days 180 --seed N [--kills K] [--faults-per-day F]``.

Wall time: the replay runs at the paper loop's speed (~14 candles/s for 3 symbols on 2 cores
at load 5, 2026-12-02, request limits counted on paced replay time), plus ~2.5 s per SIGKILL
restart (imports ~2 s of CPU, then recovery), plus what the faults cost in wall time (a
``latency`` fault waits out the bot's 10 s request timeout, a silent market stream its 5 s
watchdog, a silent private stream up to 2 × 2 s). The CI test (30 days) injects each shape once.
Measured 2026-12-02 (2 shared cores, load average 2-6): ``--days 180 --seed 1 --kills 60`` (3
faults a day): 17280 candles in 2084 s (8.3 candles/s), 61 bot processes, 540/540 faults hit,
150 kill-switch trips, 6716 executions, 3083 trades, longest unprotected span 0.0 s, invariants
held; 850 s of CPU for harness, simulator and bots.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

from perpbot.runtime.chaos import ChaosSettings, run_chaos
from perpbot.runtime.chaos_check import fault_label


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=180)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kills", type=int, default=0, help="SIGKILLs (default: one per 3 days)")
    p.add_argument("--faults-per-day", type=float, default=3.0)
    p.add_argument("--out", type=Path, default=None, help="artefacts folder (default: a temp folder)")
    p.add_argument("--max-wall-s", type=float, default=6 * 3600.0)
    a = p.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="perpbot-chaos-"))
    kills = a.kills or max(1, a.days // 3)
    res = run_chaos(
        ChaosSettings(
            days=a.days,
            seed=a.seed,
            out=out,
            kills=kills,
            faults_per_day=a.faults_per_day,
            max_wall_s=a.max_wall_s,
        )
    )
    print(f"chaos --days {a.days} --seed {a.seed}: artefacts in {out}")
    for line in res.summary():
        print("  " + line)
    injected = Counter(fault_label(f) for f in res.faults)
    hit = Counter(fault_label(f) for f in res.faults if f.get("hits"))
    seen = Counter(res.evidence.seen)
    print("  fault                          injected  hit  line seen")
    for k in sorted(injected):
        print(f"  {k:<30} {injected[k]:>8} {hit[k]:>4} {seen[k]:>10}")
    for v in res.violations:
        print("  VIOLATION " + v)
    print(f"  invariants: {'HELD' if not res.violations else 'BROKEN'}")
    return 1 if res.violations else 0


if __name__ == "__main__":
    sys.exit(main())
