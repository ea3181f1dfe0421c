"""LightGBM filter: parameters, early stopping, native text and ONNX fidelity (≤ 1e-5)."""

from __future__ import annotations

import re

import lightgbm as lgb
import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from perpbot.errors import InsufficientDataError, ModelError
from perpbot.ml.features import FEATURE_COLS, OPTIONAL_FEATURES
from perpbot.ml.lgbm_canonical import canonicalize_model_text
from perpbot.ml.lgbm_model import (
    DEFAULT_LGBM_PARAMS,
    LgbmModel,
    effective_params,
    fit_lgbm,
)
from tests.support.ml import cpu_session

N_FEAT = len(FEATURE_COLS)
OPT_IDX = [FEATURE_COLS.index(c) for c in OPTIONAL_FEATURES]
SMALL = {"n_estimators": 120}


def realistic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """26 columns shaped like the real features: bounded oscillators, z-scores, small integers
    (ema_align, signal_strength, side), OI/funding mostly NaN; label from a noisy logistic rule."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEAT))
    col = FEATURE_COLS.index
    X[:, col("rsi")] = rng.uniform(5, 95, n)
    X[:, col("stoch_k")] = rng.uniform(0, 100, n)
    X[:, col("bb_pct")] = rng.normal(0.5, 0.4, n)
    X[:, col("ema_align")] = rng.integers(-1, 2, n)
    X[:, col("signal_strength")] = rng.integers(0, 7, n)
    X[:, col("side")] = rng.integers(0, 2, n)
    X[:, col("funding_rate")] = np.round(rng.normal(0, 1, n), 2)  # many repeated values
    for j in OPT_IDX:
        X[rng.random(n) < 0.4, j] = np.nan
    logit = (
        0.04 * (X[:, col("rsi")] - 50)
        + 0.5 * X[:, col("signal_strength")]
        - 1.5
        + 0.8 * np.nan_to_num(X[:, col("oi_change")])
        + rng.normal(0, 1, n)
    )
    y = (logit > 0).astype(np.float64)
    return X, y


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return realistic(3000, seed=3)


@pytest.fixture(scope="module")
def model(data: tuple[np.ndarray, np.ndarray]) -> LgbmModel:
    X, y = data
    return fit_lgbm(
        X[:2000], y[:2000], None, X[2000:2500], y[2000:2500], SMALL, feature_names=list(FEATURE_COLS)
    )


def thresholds(booster: lgb.Booster) -> list[tuple[int, float]]:
    out: list[tuple[int, float]] = []

    def walk(node: dict) -> None:
        if "split_feature" in node:
            out.append((node["split_feature"], float(node["threshold"])))
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return out


def adversarial_rows(booster: lgb.Booster, base: np.ndarray) -> np.ndarray:
    """For every split: the threshold itself and its double and float32 neighbours, plus NaN."""
    rows = []
    for f, t in thresholds(booster):
        with np.errstate(over="ignore"):
            t32 = np.float32(t)
        for v in (
            t,
            np.nextafter(t, np.inf),
            np.nextafter(t, -np.inf),
            float(t32),
            float(np.nextafter(t32, np.float32(np.inf))),
            float(np.nextafter(t32, np.float32(-np.inf))),
            np.nan,
        ):
            r = base.copy()
            r[f] = v
            rows.append(r)
    return np.asarray(rows)


# --------------------------------------------------------------------------- parameters


def test_defaults_are_the_spec_values() -> None:
    assert DEFAULT_LGBM_PARAMS == {
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


def test_effective_params_removes_weight_scale_and_activates_subsample() -> None:
    p, scale = effective_params()
    assert scale == 1.783105 and "weight_scale" not in p
    assert p["subsample_freq"] == 1  # subsample 0.929 would be inert without a frequency
    p, scale = effective_params({"weight_scale": 0.5, "subsample": 1.0})
    assert scale == 0.5 and "subsample_freq" not in p
    p, _ = effective_params({"subsample": 0.7, "subsample_freq": 3})
    assert p["subsample_freq"] == 3
    with pytest.raises(ModelError):
        effective_params({"weight_scale": 0})


def test_subsample_is_not_inert(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    a = fit_lgbm(X[:1500], y[:1500], None, None, None, {"n_estimators": 30, "subsample": 0.5})
    b = fit_lgbm(X[:1500], y[:1500], None, None, None, {"n_estimators": 30, "subsample": 1.0})
    assert not np.allclose(a.predict_proba(X[:200]), b.predict_proba(X[:200]))


def test_weight_scale_multiplies_the_sample_weights(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    w = np.linspace(0.5, 1.5, 1500)
    a = fit_lgbm(X[:1500], y[:1500], w, None, None, {"n_estimators": 30, "weight_scale": 3.0})
    b = fit_lgbm(X[:1500], y[:1500], 3.0 * w, None, None, {"n_estimators": 30, "weight_scale": 1.0})
    c = fit_lgbm(X[:1500], y[:1500], w, None, None, {"n_estimators": 30, "weight_scale": 1.0})
    assert np.array_equal(a.predict_proba(X[:300]), b.predict_proba(X[:300]))
    assert not np.array_equal(a.predict_proba(X[:300]), c.predict_proba(X[:300]))


# --------------------------------------------------------------------------- training


def test_early_stopping_watches_the_separate_slice(
    model: LgbmModel, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    assert model.early_stopped
    assert 1 <= model.best_iteration <= SMALL["n_estimators"]
    assert model.booster.num_trees() == model.best_iteration  # truncated: every path sees the same trees
    # The recorded AUC is the early-stopping slice's (not the training or a reporting slice's).
    es_auc = roc_auc_score(y[2000:2500], model.predict_proba(X[2000:2500]))
    assert model.best_score == pytest.approx(es_auc, abs=1e-4)
    assert model.best_score != pytest.approx(roc_auc_score(y[2500:], model.predict_proba(X[2500:])), abs=1e-4)


def test_early_stopping_stops_on_a_noisy_slice(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 2, 500).astype(float)  # labels unrelated to X: AUC peaks early
    m = fit_lgbm(
        X[:2000], y[:2000], None, X[2000:2500], noise, {"n_estimators": 300}, early_stopping_rounds=10
    )
    assert m.best_iteration < 300


def test_training_is_deterministic(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    a = fit_lgbm(X[:1000], y[:1000], None, X[1000:1300], y[1000:1300], {"n_estimators": 40})
    b = fit_lgbm(X[:1000], y[:1000], None, X[1000:1300], y[1000:1300], {"n_estimators": 40})
    assert a.native_text() == b.native_text()
    assert a.to_onnx() == b.to_onnx()  # same bytes -> same sha256 in the metadata


def test_single_class_training_is_refused(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    with pytest.raises(InsufficientDataError):
        fit_lgbm(X[:100], np.zeros(100), None, None, None, SMALL)


def test_single_class_early_stopping_slice_trains_all_rounds(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    m = fit_lgbm(X[:800], y[:800], None, X[800:900], np.zeros(100), {"n_estimators": 25})
    assert not m.early_stopped and m.best_iteration == 25 and m.best_score is None


def test_wrong_feature_count_is_a_model_error(model: LgbmModel) -> None:
    with pytest.raises(ModelError, match="expects 26 features"):
        model.predict_proba(np.zeros((3, 25)))


def test_dataframe_columns_are_reordered_by_name(
    model: LgbmModel, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = data
    frame = pd.DataFrame(X[:50], columns=list(FEATURE_COLS))
    shuffled = frame[list(reversed(FEATURE_COLS))]
    assert np.array_equal(model.predict_proba(shuffled), model.predict_proba(X[:50]))


# --------------------------------------------------------------------------- canonical model


def test_canonical_thresholds_are_float32_and_nan_routing_is_explicit(model: LgbmModel) -> None:
    for _, t in thresholds(model.booster):
        assert float(np.float32(t)) == t
    text = model.native_text()
    for line in re.findall(r"^decision_type=(.*)$", text, re.M):
        for dt in map(int, line.split()):
            assert (dt >> 2) & 3 == 2  # every node has an explicit NaN rule
    again = lgb.Booster(model_str=canonicalize_model_text(text))  # idempotent (same numbers)
    assert again.model_to_string() == text


def test_canonical_model_predicts_like_the_trained_one(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    clf = lgb.LGBMClassifier(
        n_estimators=60, verbose=-1, random_state=1, deterministic=True, force_col_wise=True, n_jobs=1
    )
    clf.fit(X[:2000], y[:2000])
    raw = clf.booster_
    canon = lgb.Booster(model_str=canonicalize_model_text(raw.model_to_string()))
    Xt = X[2000:].copy()
    Xt[::7, 0] = np.nan  # NaN in a feature that had none in training: LightGBM treats it as 0.0
    assert np.abs(raw.predict(Xt) - canon.predict(Xt)).max() < 1e-6


def test_canonicalisation_refuses_what_it_cannot_export() -> None:
    X, y = realistic(500, seed=1)
    clf = lgb.LGBMClassifier(n_estimators=3, verbose=-1, zero_as_missing=True, n_jobs=1)
    clf.fit(np.nan_to_num(X), y)
    with pytest.raises(ModelError, match="zero as missing"):
        canonicalize_model_text(clf.booster_.model_to_string())
    with pytest.raises(ModelError, match="not a LightGBM"):
        canonicalize_model_text("hello")


def test_native_text_round_trip(model: LgbmModel, data: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = data
    again = LgbmModel.from_native_text(model.native_text(), model.params)
    assert again.feature_names == list(FEATURE_COLS)
    assert np.array_equal(again.predict_proba(X), model.predict_proba(X))
    assert again.to_onnx() == model.to_onnx()


# --------------------------------------------------------------------------- ONNX


def test_onnx_graph_contract(model: LgbmModel) -> None:
    m = onnx.load_from_string(model.to_onnx())
    onnx.checker.check_model(m, full_check=True)
    (inp,) = m.graph.input
    (out,) = m.graph.output
    assert inp.name == "X" and inp.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim][1] == N_FEAT
    assert out.name == "proba" and len(out.type.tensor_type.shape.dim) == 1
    assert {o.domain: o.version for o in m.opset_import} == {"": 17, "ai.onnx.ml": 3}


def test_onnx_matches_lightgbm_on_realistic_rows_with_nan(model: LgbmModel) -> None:
    X, _ = realistic(2000, seed=11)  # unseen rows; OI columns 40 % NaN
    rng = np.random.default_rng(5)
    X[rng.random(X.shape) < 0.05] = np.nan  # NaN also where training never had any
    p_lgb = model.predict_proba(X)
    p_onnx = cpu_session(model.to_onnx()).run(["proba"], {"X": X})[0]
    assert p_onnx.shape == (2000,)
    assert np.abs(p_lgb - p_onnx).max() <= 1e-5


def test_onnx_matches_lightgbm_on_every_threshold_neighbour(
    model: LgbmModel, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = data
    A = adversarial_rows(model.booster, X[2600])
    p_lgb = model.predict_proba(A)
    p_onnx = cpu_session(model.to_onnx()).run(["proba"], {"X": A})[0]
    assert np.abs(p_lgb - p_onnx).max() <= 1e-5


def test_the_threshold_neighbours_do_break_a_naive_float32_export(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    """Guard on the test above: on an un-canonicalised booster, the plain onnxmltools export with
    float32 input diverges on those rows — so the rows really probe the split boundaries."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    X, y = data
    clf = lgb.LGBMClassifier(n_estimators=80, verbose=-1, random_state=1, n_jobs=1)
    clf.fit(X[:2000], y[:2000])
    naive = convert_lightgbm(
        clf.booster_, initial_types=[("X", FloatTensorType([None, N_FEAT]))], zipmap=False, target_opset=15
    )
    A = adversarial_rows(clf.booster_, np.nan_to_num(X[2600]))
    A = A[(np.abs(A) < 1e30).all(axis=1)]  # finite and float32-castable
    p_naive = cpu_session(naive.SerializeToString()).run(["probabilities"], {"X": A.astype(np.float32)})[0][
        :, 1
    ]
    assert np.abs(clf.booster_.predict(A) - p_naive).max() > 1e-4
