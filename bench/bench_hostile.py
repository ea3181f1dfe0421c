"""The issue 7 §3 invariants over many hostile schedules (the CI property test runs 80).

Each schedule is a seeded multi-symbol market with a random signal schedule and a random mix of
every hostile-exchange behaviour (``perpbot.backtest.hostile``); the run reports how many
schedules it tried, how many broke an invariant (grouped by the first violation's kind, with the
scenario to reproduce each) and the time per schedule.

Not a test: ``python bench/bench_hostile.py [--schedules N] [--seconds S] [--seed K]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import statistics
import time
from collections import Counter

from perpbot.backtest.hostile import BAR_MS, T0, HostileScenario, run_hostile
from perpbot.exchange.sim.faults import FaultPlan

DEAD_WINDOWS = [(), ((T0 + 3 * BAR_MS, T0 + 6 * BAR_MS),), ((T0 + 10 * BAR_MS, T0 + 11 * BAR_MS),)]


def draw_scenario(rng: random.Random) -> HostileScenario:
    def p(*choices: float) -> float:
        return rng.choice(choices)

    plan = FaultPlan(
        seed=rng.randrange(2**31),
        p_ack=p(0.0, 0.1, 0.25, 0.5),
        p_split=p(0.0, 0.1, 0.25, 0.5),
        p_expire=p(0.0, 0.1, 0.3),
        p_timeout=p(0.0, 0.1, 0.2),
        p_lost=p(0.0, 0.1),
        p_read_fail=p(0.0, 0.05, 0.15),
        dead_stream=rng.choice(
            [(), ((T0 + 3 * BAR_MS, T0 + 6 * BAR_MS),), ((T0 + 10 * BAR_MS, T0 + 11 * BAR_MS),)]
        ),
        p_cancel_fail=p(0.0, 0.1, 0.25, 0.5),
        p_during=p(0.0, 0.1, 0.25, 0.5),
        p_late=p(0.0, 0.1, 0.3),
        p_drop=p(0.0, 0.1, 0.3),
        income_delay_s=(0.0, p(0.0, 5.0, 60.0)),
        p_adl_per_bar=p(0.0, 0.02, 0.08),
    )
    return HostileScenario(
        seed=rng.randrange(2**31),
        n_symbols=rng.randint(2, 3),
        n_bars=rng.randint(20, 60),
        p_signal=p(0.15, 0.3),
        plan=plan,
    )


def kind_of(violation: str) -> str:
    """The violation with its numbers and symbol names taken out (for grouping)."""
    text = re.sub(r"step \d+: ", "", violation)
    text = re.sub(r"[A-Z]{3,}USDT", "SYM", text)
    text = re.sub(r"-?\d+(\.\d+)?", "N", text)
    return text.split("(")[0].strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedules", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: no limit)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    logging.disable(logging.CRITICAL)
    rng = random.Random(args.seed)
    tried = failed = trades = 0
    kinds: Counter[str] = Counter()
    examples: dict[str, HostileScenario] = {}
    times: list[float] = []
    t_start = time.perf_counter()
    for _ in range(args.schedules):
        if args.seconds and time.perf_counter() - t_start > args.seconds:
            break
        sc = draw_scenario(rng)
        t0 = time.perf_counter()
        report = asyncio.run(run_hostile(sc))
        times.append(time.perf_counter() - t0)
        tried += 1
        trades += report.trades
        if report.violations:
            failed += 1
            k = kind_of(report.violations[0])
            kinds[k] += 1
            examples.setdefault(k, sc)
    total = time.perf_counter() - t_start
    print(f"schedules tried: {tried}  with a violation: {failed}  trades booked: {trades}")
    if times:
        print(f"time per schedule: median {statistics.median(times) * 1000:.0f} ms, total {total:.1f} s")
    for k, n in kinds.most_common():
        print(f"  {n:5d}  {k}\n         e.g. {examples[k]}")


if __name__ == "__main__":
    main()
