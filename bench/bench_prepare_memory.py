"""One symbol's preparation: its memory peak above what it keeps (issue 13, scale).

Why: the scale benchmark's per-symbol memory carries, once per run, the peak of preparing one
symbol (its file decoded, its features and their temporaries) above the arrays the symbol keeps.
This measures that transient directly, in one process, for the path the backtest takes with the
input cache off: ``load_market_arrays`` → ``feature_arrays`` → ``prepare_series``.

Printed (MiB): what the prepared ``SymbolSeries`` keeps; the tracemalloc peak (numpy and Python
allocations, not Arrow's pool) above the start; the RSS peak (``VmHWM`` after
``/proc/self/clear_refs``) above the RSS before, with Arrow's buffers and pool included. A first,
unmeasured symbol warms the imports, TA-Lib and Arrow's pool, as in a run where this symbol is
not the first.

Not a test: ``python bench/bench_prepare_memory.py [--days 365]``.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
from bench_scale import _vm, settle_baseline  # bench/ is the script's folder, on sys.path

MIB = 1024.0 * 1024.0


def kept_bytes(series: object) -> int:
    """Bytes of the numpy arrays a prepared symbol holds (lists and dicts not counted)."""
    total = 0
    for name in series.__slots__:  # type: ignore[attr-defined]
        value = getattr(series, name)
        if isinstance(value, np.ndarray):
            total += value.nbytes
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=365)
    args = ap.parse_args()

    from perpbot.backtest.prepare import prepare_series
    from perpbot.config import AppConfig
    from perpbot.data.market_arrays import load_market_arrays
    from perpbot.data.schema import data_path
    from perpbot.data.store import save_market
    from perpbot.data.synth import synth_market
    from perpbot.ml.features import feature_arrays

    syms = ("S000USDT", "S001USDT")
    app = AppConfig(symbols=list(syms))
    with tempfile.TemporaryDirectory(prefix="perpbot-prepmem-") as tmp:
        root = Path(tmp)
        for i, sym in enumerate(syms):
            frame = synth_market(args.days, 1000 + i, symbol=sym)
            save_market(frame, data_path(root, sym), closed_through_ms=int(frame.index.asi8[-1]))
            del frame

        def prepare(sym: str) -> object:
            market = load_market_arrays(data_path(root, sym))
            pre = feature_arrays(market, app.params_for(sym))
            return prepare_series(sym, market, app, None, None, pre, contexts="signals")

        warm = prepare(syms[0])
        del warm
        gc.collect()
        base_rss = settle_baseline()
        tracemalloc.start()
        series = prepare(syms[1])
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        hwm = _vm("VmHWM")
        rss = _vm("VmRSS")
    kept = kept_bytes(series) / MIB
    print(f"{args.days} days, {series.n} candles")  # type: ignore[attr-defined]
    print(f"kept arrays            {kept:7.2f} MiB")
    print(f"tracemalloc: after     {current / MIB:7.2f} MiB, peak {peak / MIB:7.2f} MiB")
    print(f"tracemalloc peak/kept  {peak / MIB / kept:7.2f}")
    print(f"RSS: after {rss - base_rss:7.2f} MiB, peak {hwm - base_rss:7.2f} MiB above before")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
