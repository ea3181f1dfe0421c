"""Backtest benchmark (issue 3 targets: ≥ 30 000 candles/s through the real bot code, ML filter on,
three symbols over their full history — ~118 000 candles in < 4 s — and peak memory < 1 GiB).

What is measured, per mode (ML on, then ML off), each in a fresh child process so that the peak
memory of one mode is not the other's:

* ``loop``: the time-ordered candle loop (exchange bars, event delivery, ``SymbolBot.on_candle``
  with the ML filter, end-of-data closes) — candles/s through the real bot code;
* ``total``: the whole ``run_backtest`` call (load + validate parquet, features once per symbol,
  model loading, the loop, metrics) — end-to-end candles/s;
* peak RSS of the child (``resource.getrusage``; includes the interpreter and every import) and,
  with ``--tracemalloc``, the Python-heap peak of one extra run (slower, so timed separately).

Models: ``<repo>/models/<sym>/`` when it holds a model for every symbol, else quick LightGBM
models trained into a temporary folder with the production recipe (``train_symbol``, wf=0).
Those are trained on the very history the bench trades, so the ML-on *trading* figures printed
here are in-sample and say nothing about profitability: this is a speed benchmark.

Data: ``../shared/data`` (XRPUSDT, TRXUSDT, DOGEUSDT); when it is absent, a synthetic market of the
same size (425 days × 3 symbols) with relaxed rule parameters, and the output says so.

Issue 13 figures (printed first, always; real data, ML off, whole ``perpbot`` processes):

* ``perpbot --help`` wall (target ≤ 0.3 s) and ``import perpbot.cli.main`` wall;
* ``perpbot backtest --all --no-ml`` with the report and every chart: wall (target ≤ 1.5 s), the
  time from process start to its first candle (target ≤ 0.4 s), the charts' wall once the run is
  done (from sending the jobs to the chart workers, ``backtest.chart_pool``, to the last chart
  written; the parent writes the tables and lays out its summary meanwhile) and the CPU of the
  chart jobs' decoding and drawing in every process (a load-independent figure), peak RSS of the
  largest process (target ≤ 250 MiB; the chart worker is a separate, smaller process),
  fingerprint, the loop's candle-bots/s and the candles it stepped vs skipped; once with the
  default kill switch (the pinned fingerprint) and once with ``--kill-switch off`` (the issue's
  setup: the whole year trades). Each twice, both printed: with the input cache COLD (an empty
  ``backtest.input_cache`` per run: parquet decoded, features computed, the entry written) and
  WARM (the entry of an untimed first run serves the arrays and features: no pyarrow, no
  indicator); the first candle target is met only warm, so never quote the warm figure alone.
  Before anything is timed, perpbot's modules are compiled to bytecode (``compile_bytecode``):
  an installed package has its ``.pyc`` files, and with ``PYTHONDONTWRITEBYTECODE`` set nothing
  else would write them, so every process would recompile its perpbot imports (0.1-0.2 s).
  The two inner times come from a driver that runs the very
  ``perpbot`` entry point with functions wrapped (``_drive``, ``ChartPool.send``/``finish``) as their
  modules load, so nothing is imported earlier than in a plain run;
* both equity charts (PNG + HTML) drawn in one process after a warm-up, into a figure built
  ahead as the chart worker draws them after a run (``figure_stash``: the worker builds it while
  the loop runs; target ≤ 0.3 s), and, printed beside it, into a new figure and the first, cold
  pair in a fresh process;
* ``--walk-forward 4`` wall (target ≤ 5 s; folds on all cores), CPU and peak RSS, input cache cold
  and warm (``--repeat`` runs each);
* the loop alone when the bots are flat and no candle carries a signal (``SIGNAL_THRESHOLD=99``):
  candle-bots/s (target ≥ 1 M), skip-ahead on vs stepping every candle.

Medians of ``--repeat`` runs. ``--loop-modes`` adds the issue 3 figures (ML on/off loop
candles/s; trains quick models when ``models/`` has none).

Not a test: ``python bench/bench_backtest.py [--repeat N] [--tracemalloc] [--loop-modes]``.
"""

from __future__ import annotations

import argparse
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

from issue13_figures import issue13  # bench/ is the script's folder, on sys.path

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("PERPBOT_REAL_DATA") or REPO.parent / "shared" / "data")
SYMBOLS = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")
TARGET_CPS = 30_000.0
TARGET_MIB = 1024.0
SYNTH_DAYS = 425
LOOSE_ENV = {"SIGNAL_THRESHOLD": "2", "ADX_THRESHOLD": "0", "VOL_MULTIPLIER": "1.2"}


def _app_config(loose: bool) -> Any:
    from perpbot.config import load_config

    env = {"SYMBOLS": ",".join(SYMBOLS), **(LOOSE_ENV if loose else {})}
    return load_config(environ=env, env_file=None)


def prepare(work: Path) -> tuple[Path, Path, str, bool]:
    """(data dir, model dir, description, synthetic?) — trains quick models when none exist."""
    from perpbot.data.schema import data_path, model_dir
    from perpbot.ml.artifacts import onnx_path

    synthetic = not all((REAL_DATA / s.lower() / "combined_15m.parquet").is_file() for s in SYMBOLS)
    if synthetic:
        from perpbot.data.store import save_market
        from perpbot.data.synth import synth_market

        data_dir = work / "data"
        for s in SYMBOLS:
            frame = synth_market(SYNTH_DAYS, 7, symbol=s)
            save_market(frame, data_path(data_dir, s), closed_through_ms=int(frame.index.asi8[-1]))
        label = f"SYNTHETIC {SYNTH_DAYS} days x {len(SYMBOLS)} (real data absent; relaxed rule parameters)"
    else:
        data_dir = REAL_DATA
        label = f"real data {REAL_DATA}"

    repo_models = REPO / "models"
    if not synthetic and all(
        onnx_path(model_dir(repo_models, s), b).is_file() for s in SYMBOLS for b in ("lgbm",)
    ):
        return data_dir, repo_models, label + f"; models from {repo_models}", synthetic
    from perpbot.ml.training import train_symbol

    models = work / "models"
    app = _app_config(synthetic)
    t0 = time.perf_counter()
    for s in SYMBOLS:
        train_symbol(s, data_dir=data_dir, model_dir=models, config=app, backend="lgbm", wf=0)
    label += f"; quick in-sample LightGBM models trained in {time.perf_counter() - t0:.1f} s (temp folder)"
    return data_dir, models, label, synthetic


MODES = {
    "ml_on": "ML filter on (the target)",
    "ml_off": "ML filter off",
    "ml_on_busy": "ML filter on, relaxed rule parameters (stress: ~10x more signals, entries, exits)",
}


def child(
    mode: str, data_dir: Path, models: Path, synthetic: bool, repeat: int, trace: bool
) -> dict[str, Any]:
    """One mode in this process: ``repeat`` timed runs, then optionally one traced run."""
    import asyncio
    import importlib

    from perpbot.backtest.runner import BacktestConfig, run_backtest

    for name in ("perpbot.engine.bot", "perpbot.ml.filter"):  # imports are not part of the timed run
        importlib.import_module(name)
    app = _app_config(synthetic or mode == "ml_on_busy")
    cfg = BacktestConfig(symbols=SYMBOLS, data_dir=data_dir, model_dir=models, use_ml=(mode != "ml_off"))
    runs = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = asyncio.run(run_backtest(cfg, app))
        total = time.perf_counter() - t0
        stats = result.stats
        runs.append({"total_s": total, "loop_s": stats.seconds_loop, "prepare_s": stats.seconds_prepare})
    assert result is not None
    out: dict[str, Any] = {
        "mode": mode,
        "candles": result.stats.candles,
        "signals": result.stats.signals,
        "trades": len(result.trades),
        "fingerprint": result.fingerprint,
        "models": result.models,
        "runs": runs,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "portfolio": {
            "trades": result.metrics.portfolio.trades,
            "profit_factor": result.metrics.portfolio.profit_factor,
            "net_pnl": result.metrics.portfolio.net_pnl,
            "max_drawdown_pct": result.metrics.portfolio.max_drawdown_pct,
        },
        "notes": result.notes(),
    }
    if trace:
        import tracemalloc

        tracemalloc.start()
        asyncio.run(run_backtest(cfg, app))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["tracemalloc_peak_mib"] = peak / 2**20
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--loop-modes", action="store_true", help="also the issue 3 ML on/off loop figures")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="only the --help, import, equity-chart and whole-backtest figures (no walk-forward/flat loop)",
    )
    ap.add_argument("--child", choices=tuple(MODES), help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--synthetic", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        res = child(args.child, args.data_dir, args.model_dir, args.synthetic, args.repeat, args.tracemalloc)
        print(json.dumps(res))
        return 0

    # Runs not given their own input cache (the flat loop, the walk-forward, the chart child) use
    # a temporary one, never the user's (backtest.input_cache).
    cache_tmp = tempfile.TemporaryDirectory(prefix="perpbot_bench_cache_")
    os.environ.setdefault("PERPBOT_CACHE_DIR", cache_tmp.name)
    if all((REAL_DATA / s.lower() / "combined_15m.parquet").is_file() for s in SYMBOLS):
        print(f"issue 13 figures, real data {REAL_DATA}:")
        issue13(REAL_DATA, args.repeat, report_only=args.report_only)
    else:
        print(f"issue 13 figures skipped: {REAL_DATA} does not hold {', '.join(SYMBOLS)}")
    if not args.loop_modes:
        return 0
    with tempfile.TemporaryDirectory(prefix="perpbot_bench_backtest_") as tmp:
        data_dir, models, label, synthetic = prepare(Path(tmp))
        print(f"data: {label}")
        results = []
        for mode in MODES:
            cmd = [
                sys.executable, __file__, "--child", mode, "--data-dir", str(data_dir),
                "--model-dir", str(models), "--repeat", str(args.repeat),
                *(["--synthetic"] if synthetic else []), *(["--tracemalloc"] if args.tracemalloc else []),
            ]  # fmt: skip
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    ok = True
    for r in results:
        n = r["candles"]
        loop = statistics.median(x["loop_s"] for x in r["runs"])
        total = statistics.median(x["total_s"] for x in r["runs"])
        cps_loop, cps_total = n / loop, n / total
        print(f"\n{r['mode']}: {MODES[r['mode']]}")
        print(f"  {n} candles, {r['signals']} signal candles, {r['trades']} trades, models {r['models']}")
        print(f"  loop  (bot + exchange): median {loop:.3f} s  -> {cps_loop:,.0f} candles/s")
        print(f"  total (load+features+loop+metrics): median {total:.3f} s -> {cps_total:,.0f} candles/s")
        print(f"  runs: {[round(x['total_s'], 3) for x in r['runs']]}")
        print(f"  peak RSS {r['peak_rss_mib']:.0f} MiB", end="")
        if "tracemalloc_peak_mib" in r:
            print(f", Python heap peak {r['tracemalloc_peak_mib']:.0f} MiB (tracemalloc)", end="")
        print()
        p = r["portfolio"]
        pf = "n/a" if p["profit_factor"] is None else f"{p['profit_factor']:.2f}"
        dd = p["max_drawdown_pct"]
        print(f"  portfolio: {p['trades']} trades, PF {pf}, net {p['net_pnl']:.2f}, max DD {dd:.1f}%")
        for note in r["notes"]:
            print(f"  note: {note}")
        print(f"  fingerprint {r['fingerprint']}")
        if r["mode"] == "ml_on":
            ok &= cps_total >= TARGET_CPS and r["peak_rss_mib"] < TARGET_MIB
    print(
        f"\ntarget (ML on, end to end): >= {TARGET_CPS:,.0f} candles/s and peak < {TARGET_MIB:.0f} MiB: "
        f"{'met' if ok else 'NOT met'}"
    )
    print("ML-on trading figures above use in-sample models: a speed benchmark, not evidence of an edge.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
