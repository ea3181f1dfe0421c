"""The deploy gate (issue 11 §2): may a freshly trained model be served at all?

A model worse than chance used to be saved and served without a word (an XRPUSDT fold gave AUC
0.375), and folds without positives counted as AUC 0.5 in the means. ``train`` now records a
verdict, ``gate: pass | fail`` with its reason, in the model's metadata; ``MLFilter`` serves a
failed model only with ``ML_ALLOW_UNGATED=true`` and ``deploy`` refuses one without ``--force``.

The rule, on the purged walk-forward folds (:mod:`perpbot.ml.training`): only folds whose
validation signal rows hold at least :data:`GATE_MIN_POSITIVES` positives (and a negative) count;
at least :data:`GATE_MIN_FOLDS` must. The model passes when its mean precision at each fold's
operating threshold beats the no-ML baseline's (the positive rate of the same signals: the rule
takes them all) by more than :data:`GATE_PRECISION_MARGIN`, **and** its mean AUC exceeds 0.5 by
more than the fold-to-fold noise (population std of the counted folds' AUCs). Precision is what a
filter buys; AUC above noise says the ranking is not one lucky fold. A model trained without folds
(``--wf 0``) is not validated and fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from perpbot.ml.train_report import FoldMetrics

# A fold counts when its validation signal rows hold at least this many
# positives (and a negative): below that, precision and AUC are a coin toss of a few rows.
GATE_MIN_POSITIVES = 5
GATE_MIN_FOLDS = 2  # the fold-to-fold noise needs at least two folds to be measured
# Mean precision at the operating threshold must beat the no-ML baseline (the positive rate of the
# same validation signals) by more than this: below two points a filter costs trades for nothing.
GATE_PRECISION_MARGIN = 0.02


@dataclass(frozen=True)
class GateVerdict:
    """``train``'s verdict on whether a model may be served: ``passed`` and why, in words."""

    passed: bool
    reason: str
    detail: dict[str, Any]

    @property
    def word(self) -> str:
        return "pass" if self.passed else "fail"


def gate_verdict(folds: Sequence[FoldMetrics], wf: int) -> GateVerdict:
    """Pass when, on the purged walk-forward folds with at least :data:`GATE_MIN_POSITIVES`
    positives, mean precision at each fold's operating threshold beats the no-ML baseline's by more
    than :data:`GATE_PRECISION_MARGIN`, and mean AUC exceeds 0.5 by more than the fold-to-fold
    noise (the population std of the fold AUCs). Why both: precision is what the filter buys
    (fewer, better trades); AUC above noise says the ranking is not luck of one fold.
    """
    counted = [
        f for f in folds if f.n_val_positives >= GATE_MIN_POSITIVES and f.n_val_signals > f.n_val_positives
    ]
    no_pos = sum(1 for f in folds if f.n_val_positives == 0)
    detail: dict[str, Any] = {
        "rule": f"on folds with >= {GATE_MIN_POSITIVES} positives (>= {GATE_MIN_FOLDS} folds): mean "
        f"(precision - baseline precision) > {GATE_PRECISION_MARGIN} and mean AUC - 0.5 > std of fold AUCs",
        "folds_requested": wf,
        "folds_evaluated": len(folds),
        "folds_counted": len(counted),
        "folds_without_positives": no_pos,
        "folds_too_few_positives": len(folds) - len(counted) - no_pos,
        "precision_margin": GATE_PRECISION_MARGIN,
        "min_positives": GATE_MIN_POSITIVES,
    }
    if wf == 0:
        return GateVerdict(False, "not validated: trained with --wf 0 (no walk-forward folds)", detail)
    if len(counted) < GATE_MIN_FOLDS:
        return GateVerdict(
            False,
            f"only {len(counted)} of {len(folds)} folds have >= {GATE_MIN_POSITIVES} validation positives; "
            f"need {GATE_MIN_FOLDS} to compare with the baseline and measure the fold noise",
            detail,
        )
    edge = float(np.mean([f.precision - f.baseline_precision for f in counted]))
    prec = float(np.mean([f.precision for f in counted]))
    base = float(np.mean([f.baseline_precision for f in counted]))
    aucs = np.asarray([f.auc for f in counted], dtype=np.float64)
    auc_mean, auc_noise = float(aucs.mean()), float(aucs.std())  # population std, as the report
    detail.update(precision_mean=prec, baseline_precision_mean=base, precision_edge=edge)
    detail.update(auc_mean=auc_mean, auc_noise=auc_noise)
    prec_ok = edge > GATE_PRECISION_MARGIN
    auc_ok = auc_mean - 0.5 > auc_noise
    text = (
        f"precision {prec:.3f} vs baseline {base:.3f} ({edge:+.3f}, needs > +{GATE_PRECISION_MARGIN}); "
        f"AUC {auc_mean:.3f} - 0.5 = {auc_mean - 0.5:+.3f} vs fold noise {auc_noise:.3f}; "
        f"{len(counted)} folds counted" + (f", {no_pos} without positives excluded" if no_pos else "")
    )
    if prec_ok and auc_ok:
        return GateVerdict(True, text, detail)
    failed = " and ".join(
        w
        for w, ok in (
            ("precision does not beat the baseline", prec_ok),
            ("AUC does not exceed 0.5 by more than the fold noise", auc_ok),
        )
        if not ok
    )
    return GateVerdict(False, f"{failed}: {text}", detail)
