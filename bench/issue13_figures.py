"""The issue 13 figures of ``bench/bench_backtest.py`` (its docstring says what each one is): whole
``perpbot`` processes on the real data, timed from outside, with the first candle and the charts
marked from inside by a driver that wraps two functions as their modules load.

Split out of ``bench_backtest.py`` to keep each file readable; run that script, not this one.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYMBOLS = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")

PERPBOT = Path(sys.executable).parent / "perpbot"
TARGET_HELP_S = 0.3
TARGET_WHOLE_S = 1.5
TARGET_FIRST_S = 0.4
TARGET_CHARTS_S = 0.3
TARGET_WF_S = 5.0
TARGET_WHOLE_MIB = 250.0
TARGET_FLAT_CBPS = 1_000_000.0


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """(wall s, peak RSS MiB, exit status) of one child process."""
    wall, peak, rc, _ = timed_cpu(cmd, env)
    return wall, peak, rc


def timed_cpu(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, float]:
    """``timed`` plus the CPU seconds (user + system) of the child and the processes it reaped
    (the chart workers): a figure the machine's load does not inflate as much as the wall."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return time.perf_counter() - t0, usage.ru_maxrss / 1024.0, proc.returncode, cpu


DRIVER = r"""
import atexit, importlib.abc, importlib.machinery, json, os, sys, time

marks = {}


def _wrap_runner(m):
    drive = m._drive

    async def _drive(*a, **k):
        marks.setdefault("first_candle", time.time())
        marks.setdefault("cpu_first_candle", time.process_time())
        return await drive(*a, **k)

    m._drive = _drive


def _wrap_pool(m):
    send, finish = m.ChartPool.send, m.ChartPool.finish  # ``render`` is send + finish

    def timed_send(self, jobs):
        marks["charts_start"] = time.time()
        return send(self, jobs)

    def timed_finish(self):
        try:
            return finish(self)
        finally:
            marks["charts_end"] = time.time()
            marks["charts_in_parent"] = len(self.in_process)

    m.ChartPool.send = timed_send
    m.ChartPool.finish = timed_finish


def _wrap_jobs(m):
    # In whichever process decodes or draws a chart job (the chart worker and its children fork
    # from this one, hook included): its CPU seconds, one line per call, appended to one file.
    def timed(f):
        def g(*a, **k):
            c = time.process_time()
            try:
                return f(*a, **k)
            finally:
                with open(os.environ["BENCH_MARKS"] + ".cpu", "a") as fh:
                    fh.write(f"{time.process_time() - c}\n")
        return g

    m.render, m.decode = timed(m.render), timed(m.decode)


WRAP = {
    "perpbot.backtest.runner": _wrap_runner,
    "perpbot.backtest.chart_pool": _wrap_pool,
    "perpbot.backtest.chart_jobs": _wrap_jobs,
}


class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in WRAP:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            WRAP[name](module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, Hook())
pid = os.getpid()


def _save():
    if os.getpid() == pid:
        marks["cpu_self"] = time.process_time()
        with open(os.environ["BENCH_MARKS"], "w") as fh:
            fh.write(json.dumps(marks))


atexit.register(_save)
sys.argv = ["perpbot", *sys.argv[1:]]
from perpbot.cli.main import main

main()
"""


def timed_cli(args: list[str], marks_file: Path, env: dict[str, str]) -> dict[str, float]:
    """One ``perpbot`` process through ``DRIVER``: wall, peak RSS, first candle and chart times
    (seconds from the process start; the charts from the jobs' sending to the last one written),
    and CPU seconds: of the parent up to its first candle and in all (``process_time``,
    interpreter start-up excluded), of every process (``cpu``), and of every chart job's
    decoding and drawing after the run, summed over the processes that did them (``chart_cpu``:
    the charts' own work, without the load's waits, the fork or the queue)."""
    t0 = time.time()
    cmd = [sys.executable, "-c", DRIVER, *args]
    chart_cpu_file = Path(f"{marks_file}.cpu")
    chart_cpu_file.unlink(missing_ok=True)
    wall, peak, rc, cpu = timed_cpu(cmd, {**env, "BENCH_MARKS": str(marks_file)})
    if rc != 0:
        raise SystemExit(f"perpbot {' '.join(args)} exited {rc}")
    m = json.loads(marks_file.read_text())
    chart_cpu = sum(float(x) for x in chart_cpu_file.read_text().split()) if chart_cpu_file.exists() else 0.0
    return {
        "wall": wall,
        "cpu": cpu,
        "peak": peak,
        "first_candle": m["first_candle"] - t0,
        "cpu_first_candle": m["cpu_first_candle"],
        "cpu_parent": m["cpu_self"],
        "charts": m["charts_end"] - m["charts_start"] if "charts_end" in m else float("nan"),
        "charts_in_parent": m.get("charts_in_parent", float("nan")),
        "chart_cpu": chart_cpu,
    }


EQUITY_CHARTS = r"""
import asyncio, json, sys, time
from pathlib import Path
from perpbot.backtest.runner import BacktestConfig, run_backtest
from perpbot.config import load_config

syms = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")
cfg = BacktestConfig(symbols=syms, data_dir=Path(sys.argv[1]), use_ml=False)
res = asyncio.run(run_backtest(cfg, load_config(environ={"SYMBOLS": ",".join(syms)}, env_file=None)))
from perpbot.backtest import figure_stash
from perpbot.backtest.charts import equity_html_text, equity_png_bytes

times, ahead = [], []
for k in range(2 * int(sys.argv[2]) + 1):
    into_built = k > 0 and k % 2 == 0
    if into_built:  # as the chart worker: the figure built while the loop ran (untimed)
        figure_stash.build_ahead(["equity"])
    t = time.perf_counter()
    equity_png_bytes(res.metrics, res.title, res.markers())
    equity_html_text(res.metrics, res.title, res.markers())
    (ahead if into_built else times).append(time.perf_counter() - t)
points = int(res.metrics.portfolio_curve.time_ms.size)
print(json.dumps({"cold": times[0], "warm": times[1:], "ahead": ahead, "points": points}))
"""


def flat_loop(data_dir: Path, skip: bool) -> dict[str, Any]:
    """In this process: the three symbols with no signal at all (threshold 99), ML off."""
    import asyncio

    from perpbot.backtest.runner import BacktestConfig, run_backtest
    from perpbot.config import load_config

    app = load_config(environ={"SYMBOLS": ",".join(SYMBOLS), "SIGNAL_THRESHOLD": "99"}, env_file=None)
    cfg = BacktestConfig(symbols=SYMBOLS, data_dir=data_dir, use_ml=False, skip_ahead=skip)
    res = asyncio.run(run_backtest(cfg, app))
    st = res.stats
    return {
        "candles": st.candles,
        "loop_s": st.seconds_loop,
        "signals": st.signals,
        "skipped": st.candles_skipped,
    }


def report_runs(runs: list[dict[str, float]], out: Path) -> None:
    """The figures of one set of ``timed_cli`` runs, and the last run's report."""
    doc = json.loads((out / "metrics.json").read_text())
    st = doc["parameters"]["stats"]
    stepped = st["candles"] - st["candles_skipped"]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"  wall median {med('wall'):.2f} s (target <= {TARGET_WHOLE_S}), runs "
          f"{[round(r['wall'], 2) for r in runs]}; peak RSS of the largest process median "
          f"{med('peak'):.0f} MiB (target <= {TARGET_WHOLE_MIB:.0f}); CPU (all processes) median "
          f"{med('cpu'):.2f} s")  # fmt: skip
    print(f"  CPU of the perpbot process: median {med('cpu_first_candle'):.2f} s before its first "
          f"candle, {med('cpu_parent'):.2f} s in all (load-independent figures)")  # fmt: skip
    print(f"  first candle after median {med('first_candle'):.3f} s (target <= {TARGET_FIRST_S}); "
          f"charts after the run median {med('charts'):.3f} s "
          f"({max(r['charts_in_parent'] for r in runs):.0f} drawn by the parent); CPU decoding "
          f"and drawing them, all processes, median {med('chart_cpu'):.3f} s")  # fmt: skip
    print(f"  loop {st['seconds_loop']:.3f} s for {st['candles']} candle-bots "
          f"({st['candles'] / max(st['seconds_loop'], 1e-9):,.0f}/s); stepped {stepped}, skipped "
          f"{st['candles_skipped']} candles ({st['steps_skipped']} steps skipped)")  # fmt: skip
    print(f"  fingerprint {doc['fingerprint']}")


def compile_bytecode() -> str:
    """Compile perpbot's modules ahead (``__pycache__``, as an installed wheel has them): with
    ``PYTHONDONTWRITEBYTECODE`` set and no bytecode on disk, every process recompiles every
    perpbot module it imports (~0.1-0.2 s), a cost of that environment, not of the program."""
    import compileall

    import perpbot

    ok = compileall.compile_dir(str(Path(perpbot.__file__).parent), quiet=2)
    flag = "set" if sys.flags.dont_write_bytecode else "not set"
    return f"perpbot bytecode compiled ahead ({'ok' if ok else 'FAILED'}; PYTHONDONTWRITEBYTECODE {flag})"


def issue13(data_dir: Path, repeat: int, *, report_only: bool = False) -> None:
    env = dict(os.environ)
    load = os.getloadavg()
    print(
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores (shared machine)"
    )
    print(compile_bytecode())
    helps = [timed([str(PERPBOT), "--help"], env)[0] for _ in range(repeat)]
    imps = [timed([sys.executable, "-c", "import perpbot.cli.main"], env)[0] for _ in range(repeat)]
    print(f"perpbot --help: median {statistics.median(helps):.3f} s (target <= {TARGET_HELP_S}); "
          f"import perpbot.cli.main: median {statistics.median(imps):.3f} s")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", EQUITY_CHARTS, str(data_dir), str(repeat)],
                          check=True, capture_output=True, text=True, env=env)  # fmt: skip
    eq = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"both equity charts (PNG + HTML, {eq['points']} points per curve, decimated): median "
          f"{statistics.median(eq['ahead']):.3f} s warm into a figure built ahead, as the chart "
          f"worker draws them after a run (target <= {TARGET_CHARTS_S}); "
          f"{statistics.median(eq['warm']):.3f} s warm into a new figure; "
          f"{eq['cold']:.3f} s for the first pair in a fresh process")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="perpbot_bench13_") as tmp:
        for label, extra in (
            ("kill switch on (default)", []),
            ("--kill-switch off (issue setup)", ["--kill-switch", "off"]),
        ):
            for temp in ("cold", "warm"):
                # Cold: an empty input cache per run (parquet decoded, features computed, entry
                # written). Warm: the entry of an untimed first run serves arrays and features.
                runs = []
                warm_dir = Path(tmp) / f"cache_warm{len(extra)}"
                for k in range(repeat + (temp == "warm")):
                    cache = warm_dir if temp == "warm" else Path(tmp) / f"cache_cold{len(extra)}_{k}"
                    out = Path(tmp) / f"bt{len(extra)}_{temp}_{k}"
                    args = ["backtest", "--all", "--data-dir", str(data_dir), "--no-ml", "--out", str(out),
                            "--quiet", *extra]  # fmt: skip
                    run = timed_cli(args, Path(tmp) / "marks.json", {**env, "PERPBOT_CACHE_DIR": str(cache)})
                    if temp == "cold" or k > 0:
                        runs.append(run)
                print(f"\nbacktest --all --no-ml, report + charts, {label}, input cache {temp.upper()}:")
                report_runs(runs, out)
        if report_only:
            return
        # Cold: an empty input cache per run (parquet decoded, every symbol's features computed);
        # warm: the entry of an untimed first run serves them. Training, the folds' backtests and
        # the charts are the same work either way. Both printed, as for the single backtest.
        for temp in ("cold", "warm"):
            walls, peaks, cpus = [], [], []
            for k in range(repeat + (temp == "warm")):
                cache = Path(tmp) / ("wf_cache_warm" if temp == "warm" else f"wf_cache_cold_{k}")
                cmd = [str(PERPBOT), "backtest", "--all", "--data-dir", str(data_dir), "--walk-forward", "4",
                       "--out", str(Path(tmp) / f"wf_{temp}_{k}"), "--quiet"]  # fmt: skip
                wall, peak, rc, cpu = timed_cpu(cmd, {**env, "PERPBOT_CACHE_DIR": str(cache)})
                if rc != 0:
                    raise SystemExit(f"{' '.join(cmd)} exited {rc}")
                if temp == "cold" or k > 0:
                    walls.append(wall)
                    peaks.append(peak)
                    cpus.append(cpu)
            runs = [round(w, 2) for w in walls]
            print(f"\nbacktest --all --walk-forward 4, input cache {temp.upper()}: wall median "
                  f"{statistics.median(walls):.2f} s (target <= {TARGET_WF_S}), runs {runs}; "
                  f"CPU (all processes) median {statistics.median(cpus):.2f} s; peak RSS of the largest "
                  f"process {statistics.median(peaks):.0f} MiB")  # fmt: skip
    for skip in (True, False):
        runs = [flat_loop(data_dir, skip) for _ in range(repeat)]
        loop = statistics.median(r["loop_s"] for r in runs)
        n = runs[0]["candles"]
        print(f"\nflat bots, no signal ({runs[0]['signals']} signals), skip-ahead {'on' if skip else 'off'}: "
              f"loop median {loop:.4f} s for {n} candle-bots -> {n / max(loop, 1e-9):,.0f} candle-bots/s"
              + (f" (target >= {TARGET_FLAT_CBPS:,.0f}); skipped {runs[0]['skipped']}"
                 if skip else ""))  # fmt: skip
