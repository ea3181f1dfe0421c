"""The contract between a bot and its entry filter, kept apart so neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


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
