"""The two model backends behind one call: LightGBM and the small torch MLP (``mlx`` is an alias of
``nn``: MLX exists only on Apple hardware). Both fit the same balanced rows with the same early-
stopping slice, so a comparison between them is a comparison of models, not of protocols."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from perpbot.errors import ConfigError
from perpbot.ml.dataset import Dataset
from perpbot.ml.lgbm_params import ResolvedParams

SEED = 42
BACKENDS = {"lgbm": "lgbm", "nn": "nn", "mlx": "nn"}


def normalize_backend(backend: str) -> str:
    """``lgbm`` | ``nn`` (``mlx`` is an alias of ``nn``)."""
    key = backend.strip().lower()
    if key not in BACKENDS:
        raise ConfigError(f"--backend={backend!r}: expected lgbm, nn or mlx")
    return BACKENDS[key]


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
