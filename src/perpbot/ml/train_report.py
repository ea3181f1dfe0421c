"""What one training run reports: per-fold out-of-sample figures next to the no-ML baseline, and
the run's summary (the CLI table, the metadata and the training log are all built from it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perpbot.ml.evaluation import mean_std


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
