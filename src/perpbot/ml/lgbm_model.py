"""LightGBM entry filter (SPEC §6.1): fit with early stopping, native text, ONNX export.

The trained booster is rewritten into a *canonical* model before anyone uses it, so that the
ONNX export is exact (≤ 1e-5 for every input): :mod:`perpbot.ml.lgbm_canonical` explains how and
why. The rewritten booster *is* the model — metrics, the native text file and the ONNX file all
come from it.

``subsample`` note (SPEC §6.1): LightGBM ignores ``subsample`` (``bagging_fraction``) unless a
bagging frequency is set, so the tuned value was inert at the design point. ``fit_lgbm`` sets
``subsample_freq = 1`` whenever ``subsample < 1`` and no frequency is given: bagging happens on
every iteration, as the tuner intended.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from perpbot.errors import InsufficientDataError, ModelError
from perpbot.ml.decision import feature_matrix
from perpbot.ml.lgbm_canonical import canonicalize_model_text

log = logging.getLogger(__name__)

# SPEC §6.1 built-in defaults (tuned once at the design point). ``weight_scale`` is not a
# LightGBM parameter: it multiplies the sample weights and is removed before fitting.
DEFAULT_LGBM_PARAMS: dict[str, Any] = {
    "n_estimators": 434,
    "learning_rate": 0.123659,
    "max_depth": 6,
    "num_leaves": 14,
    "min_child_samples": 10,
    "subsample": 0.929062,
    "colsample_bytree": 0.946330,
    "reg_alpha": 0.573971,
    "reg_lambda": 0.000157,
    "weight_scale": 1.783105,
}

ONNX_INPUT_NAME = "X"
ONNX_OUTPUT_NAME = "proba"
ONNX_OPSET = 17
ONNX_ML_OPSET = 3  # first ai.onnx.ml opset with float64 tree thresholds/weights
ONNX_IR_VERSION = 8
LOG_EVERY = 50

# Keys the caller may not override: they define how the model is built and served.
_FORCED = {
    "objective": "binary",
    "metric": "auc",
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,  # deterministic=True needs a fixed histogram layout
    "use_missing": True,
    "zero_as_missing": False,  # NaN (not 0.0) means missing; see lgbm_canonical (2.)
}


# --------------------------------------------------------------------------- the model


@dataclass
class LgbmModel:
    """A fitted (canonical) LightGBM filter.

    ``booster`` holds exactly ``best_iteration`` trees, so LightGBM, the native text file and the
    ONNX file all evaluate the same ensemble (no "num_iteration" argument to forget anywhere).
    """

    booster: lgb.Booster
    params: dict[str, Any] = field(default_factory=dict)
    best_iteration: int = 0
    best_score: float | None = None  # early-stopping-slice AUC at best_iteration
    early_stopped: bool = False
    feature_names: list[str] | None = None

    @property
    def n_features(self) -> int:
        return int(self.booster.num_feature())

    def _matrix(self, X: Any) -> np.ndarray:
        """float64 [n, n_features] in feature order; a DataFrame is reordered by name if it can be."""
        if hasattr(X, "columns") and self.feature_names and set(self.feature_names) <= set(X.columns):
            X = X[list(self.feature_names)]
        return feature_matrix(X, self.n_features, "LightGBM filter")

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class-1 probability, float64 [n]. NaN means missing (routed as in training)."""
        arr = self._matrix(X)
        return np.asarray(self.booster.predict(arr, num_threads=1), dtype=np.float64)

    def native_text(self) -> str:
        """LightGBM's own text format (the canonical model; reload with ``from_native_text``)."""
        return str(self.booster.model_to_string())

    @classmethod
    def from_native_text(
        cls, text: str, params: Mapping[str, Any] | None = None, *, best_score: float | None = None
    ) -> LgbmModel:
        """Rebuild from ``native_text()`` output (re-canonicalised: a no-op on our own files)."""
        try:
            booster = lgb.Booster(model_str=canonicalize_model_text(text))
        except lgb.basic.LightGBMError as exc:
            raise ModelError(f"LightGBM model text is not readable: {exc}") from None
        names = list(booster.feature_name())
        if all(n.startswith("Column_") for n in names):
            names = []
        return cls(
            booster=booster,
            params=dict(params or {}),
            best_iteration=int(booster.num_trees()),
            best_score=best_score,
            feature_names=names or None,
        )

    def feature_importance(self, importance_type: str = "gain") -> np.ndarray:
        """Per-feature importance in feature order (``gain`` or ``split``)."""
        return np.asarray(self.booster.feature_importance(importance_type=importance_type), dtype=np.float64)

    def to_onnx(self) -> bytes:
        """Serialized ONNX: input ``X`` float64 [N, n_features] → output ``proba`` float32 [N].

        The tree node comes from onnxmltools' LightGBM converter (run on the canonical booster);
        its float32 threshold/weight attributes are lossless there and are re-declared as float64
        tensors here, and the graph is rebuilt around that node alone (opset 17, ai.onnx.ml 3):
        ``X → TreeEnsembleClassifier → Gather(column 1) → proba``.
        """
        import onnx
        from onnx import TensorProto, helper, numpy_helper
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        n = self.n_features
        converted = convert_lightgbm(
            self.booster,
            initial_types=[(ONNX_INPUT_NAME, FloatTensorType([None, n]))],
            zipmap=False,
            target_opset=15,  # the converter's maximum; the rebuilt graph declares 17
        )
        trees = [nd for nd in converted.graph.node if nd.op_type == "TreeEnsembleClassifier"]
        if len(trees) != 1:
            raise ModelError("onnxmltools produced an unexpected graph for the LightGBM filter")
        src = trees[0]
        # Thresholds and class weights re-declared as float64 tensors (``*_as_tensor``, ML opset 3).
        attrs = [
            helper.make_attribute(
                f"{a.name}_as_tensor", numpy_helper.from_array(np.asarray(a.floats, np.float64))
            )
            if a.name in ("nodes_values", "class_weights")
            else a
            for a in src.attribute
        ]
        tree = helper.make_node(
            "TreeEnsembleClassifier",
            [ONNX_INPUT_NAME],
            ["label", "probabilities"],
            domain="ai.onnx.ml",
            name="lgbm_trees",
        )
        tree.attribute.extend(attrs)
        pick = helper.make_node(
            "Gather", ["probabilities", "class1"], [ONNX_OUTPUT_NAME], axis=1, name="class1_proba"
        )
        graph = helper.make_graph(
            [tree, pick],
            "perpbot_lgbm_filter",
            [helper.make_tensor_value_info(ONNX_INPUT_NAME, TensorProto.DOUBLE, ["N", n])],
            [helper.make_tensor_value_info(ONNX_OUTPUT_NAME, TensorProto.FLOAT, ["N"])],
            initializer=[numpy_helper.from_array(np.asarray(1, dtype=np.int64), "class1")],
        )
        model = helper.make_model(
            graph,
            opset_imports=[
                helper.make_opsetid("", ONNX_OPSET),
                helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET),
            ],
            producer_name="perpbot",
            doc_string="LightGBM entry filter; float64 input, thresholds exact (see perpbot.ml.lgbm_model)",
        )
        model.ir_version = ONNX_IR_VERSION
        helper.set_model_props(model, {"backend": "lgbm", "input_dtype": "float64"})
        onnx.checker.check_model(model, full_check=True)
        return model.SerializeToString()


# --------------------------------------------------------------------------- training


def effective_params(params: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], float]:
    """Defaults overridden by ``params``; returns (LightGBM params, weight_scale).

    ``weight_scale`` is removed (it scales sample weights); ``subsample_freq = 1`` is added when
    ``subsample < 1`` and no frequency is given, so that ``subsample`` is not inert.
    """
    merged: dict[str, Any] = {**DEFAULT_LGBM_PARAMS, **dict(params or {})}
    weight_scale = float(merged.pop("weight_scale", 1.0))
    if not (weight_scale > 0 and math.isfinite(weight_scale)):
        raise ModelError(f"weight_scale={weight_scale!r}: must be a positive number")
    for k in ("random_state", "seed", "n_jobs", "num_threads", "verbosity", "silent"):
        merged.pop(k, None)
    if float(merged.get("subsample", 1.0)) < 1.0 and int(merged.get("subsample_freq", 0)) <= 0:
        merged["subsample_freq"] = 1
    merged.update(_FORCED)
    return merged, weight_scale


def _as_xy(X: Any, y: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    Xa = np.asarray(X, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64).ravel()
    if Xa.ndim != 2 or Xa.shape[0] != ya.shape[0]:
        raise ModelError(f"{name}: X {Xa.shape} and y {ya.shape} do not align")
    if Xa.shape[0] and not np.isin(ya, (0.0, 1.0)).all():
        raise ModelError(f"{name}: labels must be 0/1")
    return Xa, ya


def _log_callback(env: Any) -> None:
    """LightGBM callback: one DEBUG line every 50 rounds (SPEC 'log every 50 rounds')."""
    if env.iteration % LOG_EVERY == 0 and env.evaluation_result_list:
        _, metric, value, _ = env.evaluation_result_list[0][:4]
        log.debug("lgbm round %d: early-stop %s %.5f", env.iteration, metric, value)


def fit_lgbm(
    X_train: Any,
    y_train: Any,
    w_train: Any | None,
    X_es: Any | None,
    y_es: Any | None,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int = 42,
    early_stopping_rounds: int = 80,
    n_jobs: int = 1,
    feature_names: Sequence[str] | None = None,
) -> LgbmModel:
    """Fit the LightGBM filter and return its canonical, export-exact form.

    Early stopping watches AUC on ``(X_es, y_es)`` — a slice the caller carves *separately* from
    the one it reports on (SPEC §13: stopping and reporting must not share a slice). Without such
    a slice, or when it holds a single class (AUC undefined), all ``n_estimators`` rounds are kept
    and a warning says so. Sample weights are multiplied by ``weight_scale``.

    ``n_jobs`` defaults to 1: the filter's datasets are a few thousand rows, where LightGBM's
    OpenMP threads cost more than they save, and on a busy 2-core host their spin-waiting made a
    fit ~10× slower than single-threaded (measured: 13 s vs 1.1 s for 434 trees on 6 000 rows).
    Parallelise across folds or symbols instead.
    """
    Xt, yt = _as_xy(X_train, y_train, "training slice")
    if Xt.shape[0] == 0 or len(np.unique(yt)) < 2:
        raise InsufficientDataError(
            f"training slice has {Xt.shape[0]} samples and {len(np.unique(yt))} class(es); need both classes"
        )
    lgb_params, weight_scale = effective_params(params)
    w = np.ones(Xt.shape[0]) if w_train is None else np.asarray(w_train, dtype=np.float64).ravel()
    if w.shape[0] != Xt.shape[0] or not np.isfinite(w).all() or (w < 0).any():
        raise ModelError("training weights must be finite, non-negative and one per sample")
    w = w * weight_scale

    use_es = False
    if X_es is not None and y_es is not None:
        Xe, ye = _as_xy(X_es, y_es, "early-stopping slice")
        if Xe.shape[1] != Xt.shape[1]:
            raise ModelError(f"early-stopping slice has {Xe.shape[1]} features, training {Xt.shape[1]}")
        use_es = Xe.shape[0] > 0 and len(np.unique(ye)) == 2
        if not use_es:
            log.warning(
                "early-stopping slice has a single class or no rows: training all %s rounds",
                lgb_params["n_estimators"],
            )

    clf = lgb.LGBMClassifier(**lgb_params, random_state=seed, n_jobs=n_jobs)
    callbacks: list[Any] = [_log_callback]
    fit_kw: dict[str, Any] = {}
    if use_es:
        callbacks.append(lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False))
        fit_kw = {"eval_X": (Xe,), "eval_y": (ye,), "eval_names": ["early_stop"]}
    if feature_names is None and hasattr(X_train, "columns"):
        feature_names = [str(c) for c in X_train.columns]
    names = list(feature_names) if feature_names is not None else None
    if names is not None and len(names) != Xt.shape[1]:
        raise ModelError(f"{len(names)} feature names for {Xt.shape[1]} columns")
    clf.fit(
        Xt,
        yt,
        sample_weight=w,
        callbacks=callbacks,
        feature_name=names if names is not None else "auto",
        **fit_kw,
    )

    booster = clf.booster_
    best_iter = int(clf.best_iteration_ or 0) if use_es else 0
    if best_iter <= 0:
        best_iter = int(booster.current_iteration())
    best_score: float | None = None
    if use_es:
        score = clf.best_score_.get("early_stop", {}).get("auc")
        best_score = None if score is None else float(score)
    text = canonicalize_model_text(booster.model_to_string(num_iteration=best_iter))
    canonical = lgb.Booster(model_str=text)
    recorded = {
        **lgb_params,
        "weight_scale": weight_scale,
        "random_state": seed,
        "early_stopping_rounds": early_stopping_rounds,
    }
    log.info(
        "lgbm fitted: %d trees (best iteration), early-stop AUC %s",
        best_iter,
        "n/a" if best_score is None else f"{best_score:.4f}",
    )
    return LgbmModel(
        booster=canonical,
        params=recorded,
        best_iteration=best_iter,
        best_score=best_score,
        early_stopped=use_es,
        feature_names=names,
    )
