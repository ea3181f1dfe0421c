"""Feature-builder benchmark (issue 2 targets: full history < 0.25 s, live last row < 5 ms).

Prints, per real symbol in ``../shared/data`` (or a synthetic 40k-bar market when that folder is
absent): the full-history ``build_feature_frame`` time (median of 5), the live
``live_feature_row`` time on a ``LIVE_WINDOW_BARS`` window (median and p99 of 200 calls), the
``context_from_row`` cost, and the live/full parity error on 50 rows for a few window sizes —
the measurement behind ``LIVE_WINDOW_BARS``. Not a test: run ``python bench/bench_features.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from perpbot.config import SignalParams
from perpbot.ml.features import (
    FRAME_COLS,
    LIVE_WINDOW_BARS,
    build_feature_frame,
    context_from_row,
    contexts_arrays,
    feature_arrays,
    live_feature_row,
)

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PARAMS = SignalParams()
WINDOWS = (600, 700, 800, LIVE_WINDOW_BARS, 1500)


def timings(fn: Callable[[], object], repeat: int) -> np.ndarray:
    fn()  # warm-up (imports, allocator)
    out = np.empty(repeat)
    for i in range(repeat):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def parity(market: pd.DataFrame, window: int, n_rows: int = 50) -> float:
    """Max |live − full| over every frame column on ``n_rows`` rows spread over the series."""
    full = build_feature_frame(market, PARAMS).to_numpy(dtype=np.float64)
    worst = 0.0
    for t in np.linspace(max(3 * LIVE_WINDOW_BARS, window), len(market) - 1, n_rows).astype(int):
        arrays = feature_arrays(market.iloc[t + 1 - window : t + 1], PARAMS)
        live = np.array([arrays[c][-1] for c in FRAME_COLS])
        if (np.isnan(live) != np.isnan(full[t])).any():
            return float("inf")
        ok = ~np.isnan(live)
        worst = max(worst, float(np.max(np.abs(live[ok] - full[t][ok]), initial=0.0)))
    return worst


def markets() -> dict[str, pd.DataFrame]:
    if REAL_DATA.is_dir():
        found = sorted(REAL_DATA.glob("*/combined_15m.parquet"))
        if found:
            return {p.parent.name.upper(): pd.read_parquet(p) for p in found}
    from perpbot.data.synth import synth_market

    print(f"{REAL_DATA} absent: synthetic 40k-bar market")
    return {"SYNTH": synth_market(417, 1, symbol="XRPUSDT")}


def bench_symbol(name: str, market: pd.DataFrame) -> None:
    build = timings(lambda: build_feature_frame(market, PARAMS), 5)
    window = market.iloc[-LIVE_WINDOW_BARS:]
    live = timings(lambda: live_feature_row(window, PARAMS), 200)
    arrays = contexts_arrays(build_feature_frame(market, PARAMS))
    n = arrays.values.shape[0]
    start = time.perf_counter()
    for i in range(n):
        context_from_row(name, int(arrays.open_time_ms[i]), arrays.values[i], arrays.index)
    ctx_us = (time.perf_counter() - start) / n * 1e6
    print(
        f"{name:10s} {len(market):6d} bars | full build median {np.median(build) * 1e3:6.1f} ms | "
        f"live row median {np.median(live) * 1e3:5.2f} ms, p99 {np.percentile(live, 99) * 1e3:5.2f} ms | "
        f"context {ctx_us:4.1f} µs/row"
    )
    errs = ", ".join(f"{w}: {parity(market, w):.1e}" for w in WINDOWS)
    print(f"{'':10s} parity max |live − full| by window (bars) → {errs}")


def main() -> None:
    print(f"LIVE_WINDOW_BARS = {LIVE_WINDOW_BARS}")
    for name, market in markets().items():
        bench_symbol(name, market)


if __name__ == "__main__":
    main()
