"""Whether tuned parameters replace the active ones: the promotion rule.

Promotion rule (SPEC §13: tuning must not auto-promote on any improvement)
--------------------------------------------------------------------------
The best parameters are copied to ``active_lgbm_params.json`` only when **all** hold:

1. a baseline was computed (``--no-baseline`` never promotes): the same CV with the currently
   active parameters (or the built-in defaults);
2. ``best score > baseline score + 0.01``;
3. the standard deviation of the best trial's per-fold precision ≤ 0.05;
4. at least 3 folds had ≥ 3 positives (otherwise precision is measured on too few trades).

Otherwise the active parameters stay and the report says which condition failed. The previous
active file is kept as ``active_lgbm_params_prev.json``.

Separate from ``tuning.py`` because the rule is a safety decision (SPEC §13) that reads best read,
and tested, on its own: it only compares two ``CVResult`` values.
"""

from __future__ import annotations

import numpy as np

from perpbot.ml.tuning_cv import MIN_FOLD_POSITIVES, CVResult

PROMOTION_MARGIN = 0.01
MAX_FOLD_PRECISION_STD = 0.05
MIN_PRECISION_FOLDS = 3
PROMOTION_RULE = (
    f"promote only if a baseline was computed, best score > baseline + {PROMOTION_MARGIN}, "
    f"std of the best trial's per-fold precision <= {MAX_FOLD_PRECISION_STD}, and >= {MIN_PRECISION_FOLDS} "
    f"folds had >= {MIN_FOLD_POSITIVES} positives"
)


def promotion_decision(best: CVResult | None, baseline: CVResult | None) -> tuple[bool, list[str]]:
    """Apply the module's promotion rule; returns (promote?, reasons — why not, or why yes)."""
    if best is None:
        return False, ["no completed trial"]
    if baseline is None:
        return False, ["no baseline computed (--no-baseline never promotes)"]
    reasons: list[str] = []
    if not best.score > baseline.score + PROMOTION_MARGIN:
        reasons.append(
            f"best score {best.score:.4f} does not beat baseline {baseline.score:.4f} "
            f"by more than {PROMOTION_MARGIN}"
        )
    if not (np.isfinite(best.precision_std) and best.precision_std <= MAX_FOLD_PRECISION_STD):
        reasons.append(f"per-fold precision std {best.precision_std:.4f} > {MAX_FOLD_PRECISION_STD}")
    if best.precision_folds < MIN_PRECISION_FOLDS:
        reasons.append(
            f"only {best.precision_folds} fold(s) had >= {MIN_FOLD_POSITIVES} positives "
            f"(need {MIN_PRECISION_FOLDS})"
        )
    if reasons:
        return False, reasons
    return True, [
        f"best score {best.score:.4f} > baseline {baseline.score:.4f} + {PROMOTION_MARGIN}, "
        f"fold precision std {best.precision_std:.4f}, {best.precision_folds} folds counted"
    ]
