"""Per-symbol training: purged walk-forward report, final model, ONNX export, metadata, log.

What one ``train_symbol`` run does, and why each step is there:

1. Load the symbol's validated candles and build the dataset **once** (SPEC §5) with the
   symbol's own ``SignalParams`` — the label barriers are the stops the bot trades (§13 row 22).
2. Purged, embargoed walk-forward (:mod:`perpbot.ml.splits`, §13 row 23). Per fold the model is
   fit on the *balanced* training part (stratified undersampling on training only, §5), stops
   early on a separate, purged slice at the end of the training window (never on the slice it is
   scored on — §13 "early stopping uses the reporting set"), picks its operating threshold on that
   same early-stopping slice, and is scored on the validation slice, **signal rows only** (the
   model is only ever asked about rows where the rule fired; see :mod:`perpbot.ml.dataset`).
3. Every fold is reported next to the **no-ML baseline** on the very same validation signal rows:
   the rule alone accepts every signal (precision = positive rate, recall = 1), and its own score
   ``signal_strength`` is the ranking it would offer (its AUC). A filter is only worth running if
   it beats that; on the real data it often does not, and the report says so plainly.
4. The final model is fit on every sample except a purged tail, which drives early stopping and
   the operating threshold (max precision subject to recall ≥ 0.15 on the tail's signal rows,
   precision–recall curve without its terminal point; 0.50 when no point qualifies). The
   threshold is stored with the model so ``ML_THRESHOLD_MODE=model`` can use it (§13 "the tuned
   threshold is never used").
5. ONNX export and atomic save with full metadata through :mod:`perpbot.ml.artifacts`; one entry
   appended to ``training_log.json``.

LightGBM parameter precedence (SPEC §6.1): explicit tuned-params JSON > ``models/<sym>/
active_lgbm_params.json`` > built-in defaults. JSON contract: ``best_trial.params`` (or a flat
mapping) overrides the defaults; a ``weight_scale`` key is removed from the model parameters and
multiplies the sample weights instead.

The neural backend (``"nn"``, alias ``"mlx"``: MLX exists only on Apple hardware, torch CPU stands
in for it) uses the same dataset, the same balancing and the same splits (§13 row 24); its
normalisation is computed once, inside ``fit_nn``, from the rows it is fit on.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perpbot.config import AppConfig
from perpbot.data.schema import data_path as default_data_path
from perpbot.data.schema import model_dir as symbol_model_dir
from perpbot.errors import ConfigError, InsufficientDataError, ModelError
from perpbot.ml.backends import SEED, es_rows, fit_backend, normalize_backend
from perpbot.ml.dataset import build_dataset, stratified_undersample
from perpbot.ml.evaluation import (
    THRESHOLD_FALLBACK,
    THRESHOLD_MIN_RECALL,
    operating_threshold,
    positive_proba,
    precision_recall_at,
    safe_auc,
)
from perpbot.ml.fold_evaluation import evaluate_fold, utc_z
from perpbot.ml.gate import gate_verdict
from perpbot.ml.labels import LOOKAHEAD
from perpbot.ml.lgbm_params import ResolvedParams, resolve_lgbm_params
from perpbot.ml.splits import EMBARGO, holdout_tail, purged_walk_forward
from perpbot.ml.train_report import FoldMetrics, TrainReport, summarize
from perpbot.symbols import normalize_symbol

if TYPE_CHECKING:
    import pandas as pd

ProgressFn = Callable[[str, int, int], None]
"""``progress(description, completed, total)``; the CLI maps it onto a rich progress bar."""

NEGATIVE_RATIO = 3  # SPEC §5 "later" k = 3, same for LightGBM, NN and tuning
TAIL_FRACTION = 0.15  # final model: early-stopping / threshold tail
ES_FRACTION = 0.15  # walk-forward: early-stopping slice at the end of each training window


# --------------------------------------------------------------------------------------------
# Orchestration


def ensure_writable(folder: Path, *, create: bool = True) -> None:
    """Fail fast (before minutes of training) with one line when the models folder is unusable.

    ``create=False`` probes without creating anything (the folder appears only when a model is
    saved); tuning creates it at once because its study database lives there from the start.
    """
    if not create:
        from perpbot.fileio import UnwritableFolderError, check_writable_folder

        try:
            check_writable_folder(folder)
        except UnwritableFolderError as exc:
            raise ModelError(f"{folder}: models folder is not writable ({exc.strerror or exc})") from None
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write_probe.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ModelError(f"{folder}: models folder is not writable ({exc.strerror or exc})") from None


def library_versions(backend: str) -> dict[str, str]:
    names = ["numpy", "pandas", "scikit-learn", "onnx", "onnxruntime", "ta-lib"]
    names += ["lightgbm", "skl2onnx", "onnxmltools"] if backend == "lgbm" else ["torch"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def train_symbol(
    symbol: str,
    *,
    data_dir: Path,
    model_dir: Path,
    config: AppConfig,
    backend: str = "lgbm",
    wf: int = 5,
    decay: float | None = None,
    tuned_params: Path | Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    data_file: Path | None = None,
    nn_options: Mapping[str, Any] | None = None,
    lgbm_overrides: Mapping[str, Any] | None = None,
    seed: int = SEED,
) -> TrainReport:
    """Train, report and save one symbol's filter (see the module docstring for the steps).

    ``model_dir`` is the models *root*; files go to ``<model_dir>/<symbol lowercase>/``.
    ``data_file`` overrides ``<data_dir>/<symbol>/combined_15m.parquet`` (``scripts/train_model.py
    --data``). ``lgbm_overrides`` are applied on top of the resolved parameters (tests and benches
    use it to shrink ``n_estimators``); ``nn_options`` are passed to ``fit_nn`` (epochs, …).
    """
    from perpbot.data.store import data_file_sha256, load_market

    symbol = normalize_symbol(symbol, source="--symbol")
    path = Path(data_file) if data_file is not None else default_data_path(Path(data_dir), symbol)
    return train_market(
        symbol,
        lambda: load_market(path),
        model_dir=model_dir,
        config=config,
        backend=backend,
        wf=wf,
        decay=decay,
        tuned_params=tuned_params,
        progress=progress,
        source=(path, lambda: data_file_sha256(path)),
        nn_options=nn_options,
        lgbm_overrides=lgbm_overrides,
        seed=seed,
    )


def train_market(
    symbol: str,
    market: Callable[[], pd.DataFrame],
    *,
    model_dir: Path,
    config: AppConfig,
    backend: str = "lgbm",
    wf: int = 5,
    decay: float | None = None,
    tuned_params: Path | Mapping[str, Any] | None = None,
    progress: ProgressFn | None = None,
    source: tuple[Path, Callable[[], str]] | None = None,
    frame: pd.DataFrame | None = None,
    nn_options: Mapping[str, Any] | None = None,
    lgbm_overrides: Mapping[str, Any] | None = None,
    seed: int = SEED,
) -> TrainReport:
    """:func:`train_symbol` on candles already in memory: ``market()`` gives the validated frame.

    Why: the walk-forward trains every symbol on a prefix of a market it has loaded and whose
    features it has computed (issue 13): writing that prefix to a parquet file, reading it back
    and recomputing its features cost more than the fit. ``frame``: the prefix's
    ``build_feature_frame`` when the caller has it (features read rows ≤ t only, so the rows of
    the whole market's frame before the cut are exactly it; tested in ``tests/ml``).
    ``source``: the data file the candles come from and its SHA-256 (a callable, computed only
    once training got that far), recorded in the model's metadata; None for candles that never
    came from a file. ``market`` is a callable so that a bad parameters file fails before the
    data is read, as it always did.
    """
    from perpbot.ml import artifacts
    from perpbot.ml.features import build_feature_frame
    from perpbot.ml.training_log import append_training_log

    t0 = time.perf_counter()
    backend = normalize_backend(backend)
    if wf < 0:
        raise ConfigError(f"--wf={wf}: must be >= 0 (0 skips the walk-forward report)")
    decay = config.time_weight_decay if decay is None else float(decay)
    params = config.params_for(symbol)
    sym_dir = symbol_model_dir(Path(model_dir), symbol)
    total = wf + 3
    step = 0

    def tick(desc: str) -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(f"{symbol} {desc}", step, total)

    if progress is not None:
        progress(f"{symbol} loading", 0, total)
    lgbm = None
    if backend == "lgbm":
        lgbm = resolve_lgbm_params(sym_dir, tuned_params)
        if lgbm_overrides:
            lgbm = ResolvedParams({**lgbm.params, **lgbm_overrides}, lgbm.weight_scale, lgbm.source)
    candles = market()
    ensure_writable(sym_dir, create=False)  # created by the save: a failed run leaves no empty folder
    if frame is None:
        frame = build_feature_frame(candles, params)
    ds = build_dataset(
        candles, params, negative_ratio=NEGATIVE_RATIO, decay=decay, seed=seed, frame=frame, symbol=symbol
    )
    tick("dataset")

    folds = (
        purged_walk_forward(
            ds.bar_index, n_folds=wf, lookahead=LOOKAHEAD, embargo=EMBARGO, es_fraction=ES_FRACTION
        )
        if wf > 0
        else []
    )
    notes: list[str] = []
    if wf > 0 and len(folds) < wf:
        notes.append(f"only {len(folds)} of {wf} folds had a non-empty training part after purging")
    fold_metrics: list[FoldMetrics] = []
    for fold in folds:
        try:
            fold_metrics.append(
                evaluate_fold(
                    backend,
                    ds,
                    fold,
                    lgbm=lgbm,
                    config_threshold=config.ml_threshold,
                    nn_options=nn_options,
                    seed=seed,
                )
            )
        except InsufficientDataError as exc:  # e.g. a single-class training window: report, go on
            notes.append(f"fold {fold.index + 1} skipped: {exc}")
        tick(f"fold {fold.index + 1}/{wf}")
    for _ in range(wf - len(folds)):
        tick("fold skipped")

    # Final model: all samples but a purged tail (early stopping + threshold).
    fit_pool, tail = holdout_tail(ds.bar_index, TAIL_FRACTION, lookahead=LOOKAHEAD, embargo=EMBARGO)
    fit_idx = fit_pool[stratified_undersample(ds.y[fit_pool], ds.source[fit_pool], seed=seed)]
    if fit_idx.size == 0 or np.unique(ds.y[fit_idx]).size < 2:
        raise InsufficientDataError(
            f"{symbol}: the training part has {int(ds.y[fit_idx].sum())} positives in {fit_idx.size} rows; "
            "need both classes"
        )
    model = fit_backend(backend, ds, fit_idx, es_rows(ds, tail), lgbm=lgbm, nn_options=nn_options, seed=seed)
    tail_sig = tail[ds.is_signal[tail]]
    p_tail = positive_proba(model, ds.X[tail_sig])
    thr, fallback = operating_threshold(ds.y[tail_sig], p_tail)
    if fallback:
        notes.append(
            f"no tail threshold reached recall >= {THRESHOLD_MIN_RECALL}; using {THRESHOLD_FALLBACK}"
        )
    t_prec, t_rec, _ = precision_recall_at(ds.y[tail_sig], p_tail, thr)
    t_auc = safe_auc(ds.y[tail_sig], p_tail)
    tick("final model")

    summary = summarize(fold_metrics)
    gate = gate_verdict(fold_metrics, wf)
    report = TrainReport(
        symbol=symbol,
        backend=backend,
        folds=fold_metrics,
        summary=summary,
        threshold=float(thr),
        threshold_fallback=fallback,
        tail_precision=t_prec,
        tail_recall=t_rec,
        tail_auc=t_auc,
        counts=ds.counts(),
        params=dict(lgbm.params) if lgbm else _nn_params(nn_options),
        weight_scale=lgbm.weight_scale if lgbm else 1.0,
        params_source=lgbm.source if lgbm else "nn defaults",
        decay=decay,
        model_dir=sym_dir,
        data_file=None if source is None else str(source[0]),
        data_sha256="" if source is None else source[1](),
        notes=notes,
        gate=gate.word,
        gate_reason=gate.reason,
        folds_without_positives=sum(1 for f in fold_metrics if f.n_val_positives == 0),
    )
    wf_block = {
        "folds_requested": wf,
        "lookahead": LOOKAHEAD,
        "embargo": EMBARGO,
        "es_fraction": ES_FRACTION,
        "evaluated_on": "signal rows only",
        "folds": [asdict(f) for f in fold_metrics],
        "summary": report.to_dict()["summary"],
        "summary_excludes": "folds without validation positives",
        "folds_without_positives": report.folds_without_positives,
    }
    extra: dict[str, Any] = {
        "gate": gate.word,
        "gate_reason": gate.reason,
        "gate_detail": gate.detail,
        "threshold_info": {
            "rule": f"max precision s.t. recall >= {THRESHOLD_MIN_RECALL} on the purged tail's signal rows "
            f"(PR curve without its terminal point); fallback {THRESHOLD_FALLBACK}",
            "fallback_used": fallback,
            "tail_precision": t_prec,
            "tail_recall": t_rec,
            "tail_auc": t_auc,
            "tail_signals": int(tail_sig.size),
            "tail_positives": int(ds.y[tail_sig].sum()),
        },
        "training_window_detail": {
            "first_sample": utc_z(int(ds.time_ms[0])),
            "last_sample": utc_z(int(ds.time_ms[-1])),
            "fit_first": utc_z(int(ds.time_ms[fit_pool[0]])),
            "fit_last": utc_z(int(ds.time_ms[fit_pool[-1]])),
            "tail_first": utc_z(int(ds.time_ms[tail[0]])),
            "tail_last": utc_z(int(ds.time_ms[tail[-1]])),
            "bars": ds.n_bars,
        },
        "weight_scale": report.weight_scale,
        "params_source": report.params_source,
        "signal_params": params.as_dict(),
        "dataset": {
            **ds.counts(),
            "negative_ratio": NEGATIVE_RATIO,
            "decay": decay,
            "seed": seed,
            "lookahead": LOOKAHEAD,
            "fit_rows_balanced": int(fit_idx.size),
        },
        "library_versions_training": library_versions(backend),
        "notes": notes,
    }
    onnx_bytes = model.to_onnx()
    native = model.native_text() if backend == "lgbm" and hasattr(model, "native_text") else None
    report.seconds = time.perf_counter() - t0
    extra["training_seconds"] = round(report.seconds, 3)
    metadata = artifacts.build_metadata(
        backend,
        params=report.params,
        n_samples=len(ds),
        train_start=int(ds.time_ms[0]),
        train_end=int(ds.time_ms[-1]),
        data_sha256=report.data_sha256 or None,
        data_file=None if source is None else source[0],
        wf_metrics=wf_block,
        operating_threshold=report.threshold,
        symbol=symbol,
        extra=extra,
    )
    saved = artifacts.save_model(sym_dir, backend, onnx_bytes, metadata, native_text=native)
    report.files = {k: str(sym_dir / str(saved[k])) for k in ("onnx_file", "native_file") if saved.get(k)}
    append_training_log(sym_dir, _log_entry(report, saved))
    tick("saved")
    return report


def _nn_params(nn_options: Mapping[str, Any] | None) -> dict[str, Any]:
    from perpbot.ml.nn_model import effective_params

    return effective_params(nn_options)


def _log_entry(report: TrainReport, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """SPEC §7.2 log entry: date, backend, AUC, threshold/precision/recall, counts, decay, path,
    params, weight scale (+ the walk-forward summary and the no-ML baseline next to it)."""
    s = report.summary
    return {
        "date": metadata["created_at"],
        "symbol": report.symbol,
        "backend": report.backend,
        "wf_auc_mean": s["auc"][0] if report.folds else None,
        "wf_auc_std": s["auc"][1] if report.folds else None,
        "wf_precision_mean": s["precision"][0] if report.folds else None,
        "wf_baseline_precision_mean": s["baseline_precision"][0] if report.folds else None,
        "wf_baseline_auc_mean": s["baseline_auc"][0] if report.folds else None,
        "wf_folds": len(report.folds),
        "wf_folds_without_positives": report.folds_without_positives,
        "gate": report.gate,
        "gate_reason": report.gate_reason,
        "tail_auc": report.tail_auc,
        "threshold": report.threshold,
        "precision": report.tail_precision,
        "recall": report.tail_recall,
        "samples": report.counts["samples"],
        "signals": report.counts["signals"],
        "features": len(metadata.get("feature_names") or ()),
        "decay": report.decay,
        "path": str(report.model_dir),
        "data_sha256": report.data_sha256,
        "params": report.params,
        "weight_scale": report.weight_scale,
        "params_source": report.params_source,
        "training_seconds": report.seconds,
    }
