"""The contract between a bot and its entry filter, kept apart so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from perpbot.errors import ModelError


@dataclass(frozen=True, slots=True)
class FilterDecision:
    allowed: bool
    proba: float | None  # None when no model was consulted
    backend: str | None  # "nn", "lgbm" or None (pass-through / disabled)
    reason: str  # "disabled", "no_model", "accepted", "below_threshold", "inference_error", ...


class EntryFilter(Protocol):
    """What a bot needs from an ML filter: a reload check per candle and a decision per entry."""

    @property
    def has_model(self) -> bool: ...

    def maybe_reload(self) -> None: ...

    def decide(self, features: np.ndarray) -> FilterDecision: ...


class PassThroughFilter:
    """No model: every signal passes (SPEC ``NO_ML_FILTER`` and backtest ``--no-ml``)."""

    has_model = False

    def maybe_reload(self) -> None:
        return None

    def decide(self, features: np.ndarray) -> FilterDecision:
        return FilterDecision(True, None, None, "disabled")


def feature_matrix(X: Any, n_features: int, model_name: str) -> np.ndarray:
    """``X`` as a float64 ``[n, n_features]`` matrix (one row may be given as a vector).

    Every model checks its input the same way, so a wrong feature count is one ``ModelError``
    naming the model, never a shape error from deep inside LightGBM or numpy.
    """
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != n_features:
        raise ModelError(f"{model_name} expects {n_features} features, got shape {arr.shape}")
    return arr
