"""Scale benchmark (issue 13): backtest 10, 30 and 100 synthetic symbols over a year.

For each size, in a fresh child process (so one size's peak memory is not another's), the whole
``run_backtest`` call (load, features, the loop with the real bots, metrics) on that many
synthetic symbols of 365 days each, ML off, kill switch off (so every symbol trades the whole
year). Printed per size: wall time, peak RSS, time per symbol and memory per symbol (peak RSS
above the interpreter's baseline after imports, divided by the symbols), the loop's candles/s,
and how many candles the skip-ahead stepped and skipped. Then, between consecutive sizes, the
marginal memory and time of one more symbol (``marginal_memory`` says why both are printed: the
per-symbol figure carries a constant that does not scale with the symbols).

The input cache (``backtest.input_cache``) is off in the children: every size loads its parquet
files and computes its features, as before the cache existed (and 100 temporary symbols do not
fill the user's cache folder).

Targets: 100 symbols in ≤ 20 s and ≤ 2 GiB; time and memory per symbol flat within 1.5× from 10
to 100. Data: written once into a temporary folder (``synth_market`` with one seed per symbol;
synthetic symbols ``S000USDT``…; filters derived from the price level).

Not a test: ``python bench/bench_scale.py [--sizes 10,30,100] [--days 365] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_S_100 = 20.0
TARGET_MIB_100 = 2048.0


def symbols(n: int) -> list[str]:
    return [f"S{i:03d}USDT" for i in range(n)]


def write_data(root: Path, n: int, days: int) -> float:
    from perpbot.data.schema import data_path
    from perpbot.data.store import save_market
    from perpbot.data.synth import synth_market

    t0 = time.perf_counter()
    for i, sym in enumerate(symbols(n)):
        frame = synth_market(days, 1000 + i, symbol=sym)
        save_market(frame, data_path(root, sym), closed_through_ms=int(frame.index.asi8[-1]))
    return time.perf_counter() - t0


def child(data_dir: Path, n: int) -> dict[str, Any]:
    import asyncio
    import importlib

    from perpbot.backtest.kill_switch_policy import KillSwitchPolicy
    from perpbot.backtest.runner import BacktestConfig, run_backtest
    from perpbot.config import AppConfig

    # The run's lazy imports belong to the baseline, not to the symbols: a size's memory per
    # symbol is what its symbols add above an interpreter that has loaded the backtest stack.
    for name in (
        "pyarrow.parquet",
        "perpbot.strategy.indicators",
        "perpbot.ml.features",
        "perpbot.engine.bot",
        "perpbot.exchange.sim.adapter",
        "perpbot.backtest.trade_chart",
    ):
        importlib.import_module(name)
    base_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    syms = tuple(symbols(n))
    cfg = BacktestConfig(
        symbols=syms, data_dir=data_dir, use_ml=False, kill_switch=KillSwitchPolicy.parse("off")
    )
    t0 = time.perf_counter()
    res = asyncio.run(run_backtest(cfg, AppConfig(symbols=syms)))
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    st = res.stats
    return {
        "symbols": n,
        "wall_s": wall,
        "peak_mib": peak,
        "base_mib": base_mib,
        "loop_s": st.seconds_loop,
        "prepare_s": st.seconds_prepare,
        "candles": st.candles,
        "candles_skipped": st.candles_skipped,
        "trades": len(res.trades),
        "fingerprint": res.fingerprint,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,30,100")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.data, args.child)))
        return 0
    sizes = [int(x) for x in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="perpbot-scale-") as tmp:
        data = Path(tmp) / "data"
        made = write_data(data, max(sizes), args.days)
        print(f"data: {max(sizes)} synthetic symbols x {args.days} days written in {made:.1f} s")
        rows = []
        for n in sizes:
            runs = []
            for _ in range(args.repeat):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(n), "--data", str(data)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, "PERPBOT_CACHE_DIR": "off"},
                )
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = dict(runs[0])
            for k in ("wall_s", "peak_mib", "loop_s", "prepare_s"):
                r[k] = statistics.median(x[k] for x in runs)
            rows.append(r)
    print(
        f"{'symbols':>7} {'wall s':>7} {'peak MiB':>9} {'s/symbol':>9} {'MiB/symbol':>11} "
        f"{'loop s':>7} {'candles':>9} {'skipped':>9} {'trades':>7}"
    )
    for r in rows:
        n = r["symbols"]
        r["s_per_symbol"] = r["wall_s"] / n
        r["mib_per_symbol"] = (r["peak_mib"] - r["base_mib"]) / n
        print(
            f"{n:>7} {r['wall_s']:>7.2f} {r['peak_mib']:>9.0f} {r['s_per_symbol']:>9.3f} "
            f"{r['mib_per_symbol']:>11.2f} {r['loop_s']:>7.2f} {r['candles']:>9} "
            f"{r['candles_skipped']:>9} {r['trades']:>7}"
        )
    big = next((r for r in rows if r["symbols"] == 100), None)
    if big is not None:
        ok = big["wall_s"] <= TARGET_S_100 and big["peak_mib"] <= TARGET_MIB_100
        print(
            f"100 symbols: {big['wall_s']:.1f} s (target ≤ {TARGET_S_100:.0f}), {big['peak_mib']:.0f} MiB "
            f"(target ≤ {TARGET_MIB_100:.0f}): {'OK' if ok else 'MISSED'}"
        )
    if len(rows) > 1:
        for key in ("s_per_symbol", "mib_per_symbol"):
            vals = [r[key] for r in rows]
            ratio = max(vals) / min(vals) if min(vals) > 0 else float("inf")
            print(f"{key}: max/min over sizes {ratio:.2f} (target ≤ 1.5)")
        marginal_memory(rows)
    return 0


def marginal_memory(rows: list[dict[str, Any]]) -> None:
    """What one more symbol costs, between consecutive sizes, next to ``mib_per_symbol``.

    Why both: ``mib_per_symbol`` divides the peak above the post-import baseline by the symbols,
    which counts per symbol what does not grow with them: the one-symbol-at-a-time preparation
    peak (a symbol's whole file and features), and, with the opposite sign, heap the imports
    freed and the run reuses before RSS grows. Measured (issue 13): the Python heap's peak per
    symbol (tracemalloc) is flat, 4.9 and 4.1 MiB at 10 and 30 symbols, and the RSS marginals
    were 3.3 (10->30) and 3.7 (30->100) MiB per symbol, yet ``mib_per_symbol`` went 1.52 -> 3.40
    (ratio 2.24): the constant makes the small sizes look cheaper, though nothing grows faster
    than the symbols. The marginal cost has no constant term: flat within 1.5x means memory
    linear in the symbols."""
    marg = []
    for a, b in itertools.pairwise(rows):
        mib = (b["peak_mib"] - a["peak_mib"]) / (b["symbols"] - a["symbols"])
        sec = (b["wall_s"] - a["wall_s"]) / (b["symbols"] - a["symbols"])
        marg.append(mib)
        print(f"marginal {a['symbols']}->{b['symbols']} symbols: {mib:.2f} MiB/symbol, {sec:.3f} s/symbol")
    if len(marg) > 1 and min(marg) > 0:
        ratio = max(marg) / min(marg)
        print(f"marginal MiB/symbol: max/min over steps {ratio:.2f} (target ≤ 1.5: memory linear in symbols)")


if __name__ == "__main__":
    raise SystemExit(main())
