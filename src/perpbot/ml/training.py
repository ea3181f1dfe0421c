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

import datetime as dt
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from perpbot.config import AppConfig
from perpbot.data.schema import data_path as default_data_path
from perpbot.data.schema import model_dir as symbol_model_dir
from perpbot.errors import ConfigError, InsufficientDataError, ModelError
from perpbot.ml.dataset import Dataset, build_dataset, stratified_undersample
from perpbot.ml.gate import gate_verdict
from perpbot.ml.labels import LOOKAHEAD
from perpbot.ml.splits import EMBARGO, Fold, holdout_tail, purged_walk_forward
from perpbot.symbols import normalize_symbol

ProgressFn = Callable[[str, int, int], None]
"""``progress(description, completed, total)``; the CLI maps it onto a rich progress bar."""

NEGATIVE_RATIO = 3  # SPEC §5 "later" k = 3, same for LightGBM, NN and tuning
SEED = 42
TAIL_FRACTION = 0.15  # final model: early-stopping / threshold tail
ES_FRACTION = 0.15  # walk-forward: early-stopping slice at the end of each training window
THRESHOLD_MIN_RECALL = 0.15
THRESHOLD_FALLBACK = 0.50
ACTIVE_PARAMS_FILE = "active_lgbm_params.json"
BACKENDS = {"lgbm": "lgbm", "nn": "nn", "mlx": "nn"}


# --------------------------------------------------------------------------------------------
# Metrics (signal rows only; shared with tuning)


def safe_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, or 0.5 when the slice has a single class (SPEC §5) or is empty."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if y.size == 0 or np.unique(y).size < 2:
        return 0.5
    return float(roc_auc_score(y, score))


def precision_recall_at(y: np.ndarray, proba: np.ndarray, threshold: float) -> tuple[float, float, int]:
    """(precision, recall, accepted count) when accepting ``proba ≥ threshold``; precision is 0
    when nothing is accepted (an unusable filter earns no credit), recall 0 without positives."""
    y = np.asarray(y)
    accepted = np.asarray(proba) >= threshold
    n_acc = int(accepted.sum())
    tp = int((accepted & (y == 1)).sum())
    n_pos = int((y == 1).sum())
    return (tp / n_acc if n_acc else 0.0), (tp / n_pos if n_pos else 0.0), n_acc


def max_precision_at_recall(
    y: np.ndarray, proba: np.ndarray, min_recall: float
) -> tuple[float | None, float, float]:
    """(threshold, precision, recall) maximising precision subject to ``recall ≥ min_recall``.

    Uses the precision–recall curve with its terminal point (recall 0, precision 1 by convention)
    dropped, as SPEC §6.1 prescribes. Among equal precisions the lowest threshold (highest recall)
    wins. ``(None, 0, 0)`` when the slice is single-class or no point qualifies.
    """
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y)
    if y.size == 0 or np.unique(y).size < 2:
        return None, 0.0, 0.0
    prec, rec, thr = precision_recall_curve(y, proba)
    prec, rec = prec[:-1], rec[:-1]
    ok = np.flatnonzero(rec >= min_recall)
    if ok.size == 0:
        return None, 0.0, 0.0
    best = ok[np.argmax(prec[ok])]
    return float(thr[best]), float(prec[best]), float(rec[best])


def operating_threshold(y: np.ndarray, proba: np.ndarray) -> tuple[float, bool]:
    """SPEC §6.1 operating threshold: max precision s.t. recall ≥ 0.15; (0.50, True) as fallback."""
    thr, _, _ = max_precision_at_recall(y, proba, THRESHOLD_MIN_RECALL)
    return (THRESHOLD_FALLBACK, True) if thr is None else (thr, False)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population std (ddof 0: the folds are the whole population we report on)."""
    if not values:
        return float("nan"), float("nan")
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


# --------------------------------------------------------------------------------------------
# Parameters (SPEC §6.1 precedence and JSON contract)


@dataclass(frozen=True)
class ResolvedParams:
    """LightGBM parameters after precedence, the weight scale taken out, and where they came from."""

    params: dict[str, Any]
    weight_scale: float
    source: str


def default_resolved_params() -> ResolvedParams:
    """The SPEC §6.1 built-in defaults, weight scale separated."""
    from perpbot.ml.lgbm_model import DEFAULT_LGBM_PARAMS

    params = dict(DEFAULT_LGBM_PARAMS)
    scale = float(params.pop("weight_scale"))
    return ResolvedParams(params=params, weight_scale=scale, source="defaults")


def params_from_json(data: Any, where: str) -> dict[str, Any]:
    """Extract the parameter mapping of a tune-results / active-params JSON (or a flat mapping)."""
    if isinstance(data, Mapping):
        best = data.get("best_trial")
        if isinstance(best, Mapping) and isinstance(best.get("params"), Mapping):
            return dict(best["params"])
        if isinstance(data.get("params"), Mapping):
            return dict(data["params"])
        if data and all(isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()):
            return dict(data)
    raise ConfigError(f"{where}: no parameters found (expected best_trial.params, params, or a flat mapping)")


def load_params_file(path: Path) -> dict[str, Any]:
    """Read a params JSON; a missing or malformed file is a one-line ``ConfigError``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: tuned-params file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return params_from_json(data, str(path))


def resolve_lgbm_params(
    sym_dir: Path, tuned_params: Path | Mapping[str, Any] | None = None
) -> ResolvedParams:
    """Apply the precedence tuned JSON > ``active_lgbm_params.json`` > defaults.

    Unknown keys are refused rather than silently passed to LightGBM: a typo in a hand-edited file
    would otherwise train with a default and nobody would notice.
    """
    defaults = default_resolved_params()
    if tuned_params is not None:
        if isinstance(tuned_params, Mapping):
            override, source = params_from_json(tuned_params, "tuned params"), "tuned-params (mapping)"
        else:
            override, source = load_params_file(Path(tuned_params)), f"tuned-params {tuned_params}"
    elif (Path(sym_dir) / ACTIVE_PARAMS_FILE).is_file():
        active = Path(sym_dir) / ACTIVE_PARAMS_FILE
        override, source = load_params_file(active), str(active)
    else:
        override, source = {}, "defaults"
    scale = float(override.pop("weight_scale", defaults.weight_scale))
    unknown = sorted(set(override) - set(defaults.params))
    if unknown:
        raise ConfigError(f"{source}: unknown LightGBM parameter {unknown[0]!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"{source}: weight_scale={scale!r} must be a positive number")
    params = {**defaults.params, **override}
    return ResolvedParams(params=params, weight_scale=scale, source=source)


# --------------------------------------------------------------------------------------------
# Backends


def normalize_backend(backend: str) -> str:
    """``lgbm`` | ``nn`` (``mlx`` is an alias of ``nn``)."""
    key = backend.strip().lower()
    if key not in BACKENDS:
        raise ConfigError(f"--backend={backend!r}: expected lgbm, nn or mlx")
    return BACKENDS[key]


def _proba(model: Any, X: np.ndarray) -> np.ndarray:
    p = np.asarray(model.predict_proba(X), dtype=np.float64)
    return p[:, -1] if p.ndim == 2 else p


def es_rows(ds: Dataset, idx: np.ndarray) -> np.ndarray:
    """Early-stopping rows: the signal rows of the slice (the population the model is judged on)
    when they hold both classes; otherwise the whole slice; empty when even that is single-class
    (the model then trains for its full budget)."""
    sig = idx[ds.is_signal[idx]]
    if np.unique(ds.y[sig]).size == 2:
        return sig
    if np.unique(ds.y[idx]).size == 2:
        return idx
    return idx[:0]


def fit_backend(
    backend: str,
    ds: Dataset,
    fit_idx: np.ndarray,
    es_idx: np.ndarray,
    *,
    lgbm: ResolvedParams | None,
    nn_options: Mapping[str, Any] | None = None,
    seed: int = SEED,
) -> Any:
    """Fit one model on ``fit_idx`` (already balanced) with early stopping on ``es_idx``."""
    X_es = ds.X[es_idx] if es_idx.size else None
    y_es = ds.y[es_idx] if es_idx.size else None
    if backend == "lgbm":
        from perpbot.ml.lgbm_model import fit_lgbm

        assert lgbm is not None
        # fit_lgbm multiplies the weights by ``weight_scale`` itself (and would fall back to the
        # default scale if the key were missing), so it is passed back in, never applied here.
        params = {**lgbm.params, "weight_scale": lgbm.weight_scale}
        return fit_lgbm(
            ds.X[fit_idx],
            ds.y[fit_idx],
            ds.w[fit_idx],
            X_es,
            y_es,
            params,
            seed=seed,
            feature_names=list(ds.feature_cols),
        )
    from perpbot.ml.nn_model import fit_nn

    # The MLP trains for a fixed number of epochs (SPEC §6.2, no early stopping); the ES slice
    # still chooses its operating threshold, so both backends follow the same protocol.
    return fit_nn(ds.X[fit_idx], ds.y[fit_idx], ds.w[fit_idx], dict(nn_options or {}), seed=seed)


# --------------------------------------------------------------------------------------------
# Reports


@dataclass
class FoldMetrics:
    """Out-of-sample figures of one fold, model next to the no-ML baseline (signal rows only)."""

    fold: int
    val_start: str
    val_end: str
    n_fit: int  # balanced rows the model was fit on
    n_es: int
    n_val_signals: int
    n_val_positives: int
    auc: float
    threshold: float  # chosen on the fold's early-stopping slice, as the final model's is
    threshold_fallback: bool
    precision: float
    recall: float
    n_accepted: int
    precision_at_config: float  # at ML_THRESHOLD (what ML_THRESHOLD_MODE=config would do)
    recall_at_config: float
    baseline_auc: float  # signal_strength as the ranking
    baseline_precision: float  # positive rate: the rule accepts every signal
    baseline_recall: float = 1.0


SUMMARY_KEYS = ("auc", "precision", "recall", "baseline_auc", "baseline_precision")


@dataclass
class TrainReport:
    """Everything a human (CLI table) or the metadata needs about one training run."""

    symbol: str
    backend: str
    folds: list[FoldMetrics]
    summary: dict[str, tuple[float, float]]
    threshold: float
    threshold_fallback: bool
    tail_precision: float
    tail_recall: float
    tail_auc: float
    counts: dict[str, int]
    params: dict[str, Any]
    weight_scale: float
    params_source: str
    decay: float
    model_dir: Path
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    data_file: str = ""
    data_sha256: str = ""
    notes: list[str] = field(default_factory=list)
    gate: str = "fail"
    gate_reason: str = ""
    folds_without_positives: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model_dir"] = str(self.model_dir)
        d["summary"] = {k: {"mean": m, "std": s} for k, (m, s) in self.summary.items()}
        return d


def summarize(folds: list[FoldMetrics]) -> dict[str, tuple[float, float]]:
    """Mean ± std per figure over the folds whose validation holds a positive: a fold without
    positives has no AUC (it used to count as 0.5) and no precision; it is counted separately."""
    used = [f for f in folds if f.n_val_positives > 0]
    return {k: mean_std([float(getattr(f, k)) for f in used]) for k in SUMMARY_KEYS}


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate_fold(
    backend: str,
    ds: Dataset,
    fold: Fold,
    *,
    lgbm: ResolvedParams | None,
    config_threshold: float,
    nn_options: Mapping[str, Any] | None = None,
    seed: int = SEED,
) -> FoldMetrics:
    """Fit on the fold's balanced training part, stop early and pick the threshold on its ES
    slice, score the validation signal rows next to the no-ML baseline."""
    tr = fold.train_idx
    fit_idx = tr[stratified_undersample(ds.y[tr], ds.source[tr], seed=seed)]
    es = es_rows(ds, fold.es_idx)
    model = fit_backend(backend, ds, fit_idx, es, lgbm=lgbm, nn_options=nn_options, seed=seed)

    es_sig = fold.es_idx[ds.is_signal[fold.es_idx]]
    thr, fallback = (
        operating_threshold(ds.y[es_sig], _proba(model, ds.X[es_sig]))
        if es_sig.size
        else (THRESHOLD_FALLBACK, True)
    )

    val = fold.val_idx[ds.is_signal[fold.val_idx]]
    y_val = ds.y[val]
    p_val = _proba(model, ds.X[val]) if val.size else np.zeros(0)
    prec, rec, n_acc = precision_recall_at(y_val, p_val, thr)
    prec_c, rec_c, _ = precision_recall_at(y_val, p_val, config_threshold)
    from perpbot.ml.features import SIGNAL_STRENGTH_INDEX

    return FoldMetrics(
        fold=fold.index,
        val_start=_iso(int(ds.time_ms[fold.val_idx[0]])),
        val_end=_iso(int(ds.time_ms[fold.val_idx[-1]])),
        n_fit=int(fit_idx.size),
        n_es=int(es.size),
        n_val_signals=int(val.size),
        n_val_positives=int(y_val.sum()),
        auc=safe_auc(y_val, p_val),
        threshold=float(thr),
        threshold_fallback=fallback,
        precision=prec,
        recall=rec,
        n_accepted=n_acc,
        precision_at_config=prec_c,
        recall_at_config=rec_c,
        baseline_auc=safe_auc(y_val, ds.X[val, SIGNAL_STRENGTH_INDEX]),
        baseline_precision=float(y_val.mean()) if val.size else 0.0,
    )


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
    from perpbot.ml import artifacts
    from perpbot.ml.features import build_feature_frame

    t0 = time.perf_counter()
    symbol = normalize_symbol(symbol, source="--symbol")
    backend = normalize_backend(backend)
    if wf < 0:
        raise ConfigError(f"--wf={wf}: must be >= 0 (0 skips the walk-forward report)")
    decay = config.time_weight_decay if decay is None else float(decay)
    params = config.params_for(symbol)
    sym_dir = symbol_model_dir(Path(model_dir), symbol)
    path = Path(data_file) if data_file is not None else default_data_path(Path(data_dir), symbol)
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
    market = load_market(path)
    ensure_writable(sym_dir, create=False)  # created by the save: a failed run leaves no empty folder
    frame = build_feature_frame(market, params)
    ds = build_dataset(
        market, params, negative_ratio=NEGATIVE_RATIO, decay=decay, seed=seed, frame=frame, symbol=symbol
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
    p_tail = _proba(model, ds.X[tail_sig])
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
        data_file=str(path),
        data_sha256=data_file_sha256(path),
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
            "first_sample": _iso(int(ds.time_ms[0])),
            "last_sample": _iso(int(ds.time_ms[-1])),
            "fit_first": _iso(int(ds.time_ms[fit_pool[0]])),
            "fit_last": _iso(int(ds.time_ms[fit_pool[-1]])),
            "tail_first": _iso(int(ds.time_ms[tail[0]])),
            "tail_last": _iso(int(ds.time_ms[tail[-1]])),
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
        data_sha256=report.data_sha256,
        data_file=path,
        wf_metrics=wf_block,
        operating_threshold=report.threshold,
        symbol=symbol,
        extra=extra,
    )
    saved = artifacts.save_model(sym_dir, backend, onnx_bytes, metadata, native_text=native)
    report.files = {k: str(sym_dir / str(saved[k])) for k in ("onnx_file", "native_file") if saved.get(k)}
    artifacts.append_training_log(sym_dir, _log_entry(report, saved))
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
