"""Single-row ONNX inference latency through ``MLFilter.decide`` (target: p99 < 200 µs).

Trains both backends on synthetic 26-feature data (LightGBM with the SPEC §6.1 default
parameters, the SPEC §6.2 MLP with H = 128 for a few epochs — latency does not depend on how well
it is trained), saves them with ``perpbot.ml.artifacts`` into a temporary models folder, then times
``decide`` on rows the model has not seen (OI/funding partly NaN) exactly as the live bot calls it:
one float64 row per call, cast to the dtype the ONNX input declares.

Run: ``python bench/bench_inference.py [--calls 20000] [--epochs 5]``
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from perpbot.ml.artifacts import build_metadata, save_model
from perpbot.ml.features import FEATURE_COLS, OPTIONAL_FEATURES
from perpbot.ml.filter import MLFilter


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURE_COLS)))
    for name in OPTIONAL_FEATURES:
        X[rng.random(n) < 0.4, FEATURE_COLS.index(name)] = np.nan
    logit = X[:, 0] + 0.5 * X[:, 11] + np.nan_to_num(X[:, 21]) + rng.normal(size=n)
    return X, (logit > 0.5).astype(np.float64)


def train_and_save(folder: Path, epochs: int) -> dict[str, float]:
    from perpbot.ml.lgbm_model import fit_lgbm
    from perpbot.ml.nn_model import fit_nn

    X, y = synthetic(6000, seed=1)
    t0 = time.perf_counter()
    # Early stopping disabled (no slice) so the ensemble has all 434 default trees: worst case.
    lgbm = fit_lgbm(X[:5000], y[:5000], None, None, None)
    t1 = time.perf_counter()
    nn = fit_nn(X[:5000], y[:5000], None, {"epochs": epochs})
    t2 = time.perf_counter()
    for backend, model, native in (("lgbm", lgbm, lgbm.native_text()), ("nn", nn, None)):
        meta = build_metadata(backend, params=model.params, n_samples=5000)
        save_model(folder, backend, model.to_onnx(), meta, native_text=native)
    return {"lgbm_fit_s": t1 - t0, "nn_fit_s": t2 - t1, "lgbm_trees": float(lgbm.best_iteration)}


def time_decide(filt: MLFilter, rows: np.ndarray, calls: int) -> np.ndarray:
    for i in range(min(2000, calls)):  # warm-up: allocator, caches, branch predictors
        filt.decide(rows[i % len(rows)])
    out = np.empty(calls, dtype=np.float64)
    clock = time.perf_counter_ns
    for i in range(calls):
        x = rows[i % len(rows)]
        t = clock()
        filt.decide(x)
        out[i] = clock() - t
    return out / 1000.0  # µs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "xrpusdt"
        info = train_and_save(folder, args.epochs)
        rows, _ = synthetic(1000, seed=2)
        print(f"python {platform.python_version()} on {platform.machine()}; {args.calls} single-row calls")
        print(
            f"trained: lgbm {int(info['lgbm_trees'])} trees in {info['lgbm_fit_s']:.2f} s, "
            f"nn H=128 {args.epochs} epochs in {info['nn_fit_s']:.2f} s"
        )
        print(f"{'backend':8} {'dtype':8} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8} {'max µs':>9}")
        for backend in ("lgbm", "nn"):
            filt = MLFilter(folder, backends=(backend,), threshold=0.55)
            assert filt.backend == backend, filt.status()
            us = time_decide(filt, rows, args.calls)
            p50, p90, p99 = np.percentile(us, [50, 90, 99])
            dtype = filt.status()["input_dtype"]
            print(f"{backend:8} {dtype:8} {p50:8.1f} {p90:8.1f} {p99:8.1f} {us.max():9.1f}")
            assert filt.error_count == 0


if __name__ == "__main__":
    main()
