"""MLFilter: SPEC §14 "ML filter" rows, priority, fallback on bad files, hot reload, NO_ML_FILTER,
inference errors, real LightGBM / MLP models served through onnxruntime, and the import hygiene
of the live process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from perpbot.errors import ModelError
from perpbot.ml.artifacts import build_metadata, save_model
from perpbot.ml.decision import EntryFilter
from perpbot.ml.features import FEATURE_COLS
from perpbot.ml.filter import MLFilter

N_FEAT = len(FEATURE_COLS)
LOGGER = "perpbot.ml.filter"


def probe_model(dtype: int = TensorProto.FLOAT, offset: float = 0.0) -> bytes:
    """A filter-shaped ONNX whose probability is feature 0 (+ offset): the test controls ``p``."""
    nodes = [
        helper.make_node("Gather", ["X", "col0"], ["x0"], axis=1),
        helper.make_node("Cast", ["x0"], ["x0f"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["x0f", "offset"], ["proba"]),
    ]
    graph = helper.make_graph(
        nodes,
        "probe",
        [helper.make_tensor_value_info("X", dtype, ["N", N_FEAT])],
        [helper.make_tensor_value_info("proba", TensorProto.FLOAT, ["N"])],
        initializer=[
            helper.make_tensor("col0", TensorProto.INT64, [], [0]),
            helper.make_tensor("offset", TensorProto.FLOAT, [], [offset]),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def metadata(backend: str, threshold: float | None = None) -> dict:
    return build_metadata(backend, params={}, n_samples=10, operating_threshold=threshold)


def install(
    folder: Path, backend: str, onnx_bytes: bytes | None = None, threshold: float | None = None
) -> None:
    dtype = TensorProto.DOUBLE if backend == "lgbm" else TensorProto.FLOAT
    save_model(folder, backend, onnx_bytes or probe_model(dtype), metadata(backend, threshold))


def row(p: float) -> np.ndarray:
    x = np.zeros(N_FEAT)
    x[0] = p
    return x


# --------------------------------------------------------------------------- SPEC §14 rows


def test_no_files_allows_every_signal(tmp_path: Path) -> None:
    f = MLFilter(tmp_path / "xrpusdt")
    as_protocol: EntryFilter = f  # the bot's contract (static check; the Protocol is not runtime-checkable)
    assert as_protocol.has_model is False
    assert not f.has_model and f.backend is None
    d = f.decide(row(0.01))
    assert (d.allowed, d.proba, d.backend, d.reason) == (True, None, None, "no_model")
    assert f.load_error_count == 0  # a missing model is not an error


@pytest.mark.parametrize("backend", ["nn", "lgbm"])
def test_threshold_060_allows_065_and_rejects_045(tmp_path: Path, backend: str) -> None:
    install(tmp_path, backend)
    f = MLFilter(tmp_path, threshold=0.60)
    assert f.has_model and f.backend == backend
    hi, lo = f.decide(row(0.65)), f.decide(row(0.45))
    assert hi.allowed and hi.reason == "accepted" and hi.proba == pytest.approx(0.65, abs=1e-6)
    assert not lo.allowed and lo.reason == "below_threshold" and lo.proba == pytest.approx(0.45, abs=1e-6)
    assert f.decide(row(0.60)).allowed  # p >= threshold


def test_reload_with_files_missing_is_not_loaded(tmp_path: Path) -> None:
    install(tmp_path, "nn")
    f = MLFilter(tmp_path, threshold=0.6)
    assert f.has_model
    (tmp_path / "nn_filter.onnx").unlink()
    (tmp_path / "nn_filter.json").unlink()
    f.maybe_reload()
    assert not f.has_model
    assert f.decide(row(0.1)).reason == "no_model"
    assert f.load_error_count == 0


# --------------------------------------------------------------------------- priority and fallback


def test_priority_nn_over_lgbm_and_configurable(tmp_path: Path) -> None:
    install(tmp_path, "nn", probe_model(TensorProto.FLOAT, offset=0.0))
    install(tmp_path, "lgbm", probe_model(TensorProto.DOUBLE, offset=0.25))
    assert MLFilter(tmp_path).backend == "nn"
    f = MLFilter(tmp_path, backends=("lgbm", "nn"))
    assert f.backend == "lgbm"
    assert f.decide(row(0.5)).proba == pytest.approx(0.75)
    assert MLFilter(tmp_path, backends=("lgbm",)).backend == "lgbm"


def test_corrupt_onnx_logs_an_error_and_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    install(tmp_path, "nn")
    install(tmp_path, "lgbm")
    (tmp_path / "nn_filter.onnx").write_bytes(b"\x08\x01garbage that is not a model")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        f = MLFilter(tmp_path)
    assert f.backend == "lgbm" and f.load_error_count == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "nn model skipped" in errors[0].getMessage()
    assert "nn_filter.onnx" in errors[0].getMessage()
    assert f.status()["last_load_errors"]


def test_a_model_that_onnxruntime_cannot_load_is_skipped(tmp_path: Path) -> None:
    """Metadata consistent (sha256 matches) but the graph itself is unusable."""
    install(tmp_path, "lgbm")
    bad = helper.make_model(
        helper.make_graph(
            [helper.make_node("NoSuchOp", ["X"], ["proba"], domain="nowhere")],
            "bad",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", N_FEAT])],
            [helper.make_tensor_value_info("proba", TensorProto.FLOAT, ["N"])],
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("nowhere", 1)],
    )
    from perpbot.ml import artifacts

    meta = {**metadata("nn"), "onnx_sha256": artifacts.sha256_bytes(bad.SerializeToString()), "backend": "nn"}
    (tmp_path / "nn_filter.json").write_text(__import__("json").dumps(meta))
    (tmp_path / "nn_filter.onnx").write_bytes(bad.SerializeToString())
    f = MLFilter(tmp_path)
    assert f.backend == "lgbm" and f.load_error_count == 1


def test_only_a_corrupt_model_means_pass_through_without_crashing(tmp_path: Path) -> None:
    install(tmp_path, "nn")
    (tmp_path / "nn_filter.json").write_text("{truncated")
    f = MLFilter(tmp_path)
    assert not f.has_model and f.load_error_count == 1
    assert f.decide(row(0.0)).allowed


def test_schema_mismatch_is_refused_with_a_clear_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(tmp_path, "nn")
    install(tmp_path, "lgbm")
    path = tmp_path / "nn_filter.json"
    path.write_text(path.read_text().replace('"feature_schema_hash": "', '"feature_schema_hash": "00'))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        f = MLFilter(tmp_path)
    assert f.backend == "lgbm"
    assert any("trained for feature schema 00" in r.getMessage() for r in caplog.records)


def test_onnx_replaced_without_its_metadata_is_refused(tmp_path: Path) -> None:
    install(tmp_path, "nn")
    (tmp_path / "nn_filter.onnx").write_bytes(probe_model(offset=0.1))
    f = MLFilter(tmp_path)
    assert not f.has_model and "sha256 differs" in f.status()["last_load_errors"][0]


# --------------------------------------------------------------------------- hot reload


def test_hot_reload_after_the_file_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = MLFilter(tmp_path, threshold=0.6)
    assert not f.has_model
    install(tmp_path, "lgbm")  # appears later
    f.maybe_reload()
    assert f.backend == "lgbm" and f.decide(row(0.5)).proba == pytest.approx(0.5)
    reloads = f.reload_count
    f.maybe_reload()  # nothing changed: no reload
    assert f.reload_count == reloads
    install(tmp_path, "lgbm", probe_model(TensorProto.DOUBLE, offset=0.3))  # redeployed
    with caplog.at_level(logging.INFO, logger=LOGGER):
        f.maybe_reload()
    assert f.decide(row(0.5)).proba == pytest.approx(0.8)
    assert any("using lgbm" in r.getMessage() for r in caplog.records)
    install(tmp_path, "nn")  # a higher-priority model arrives
    f.maybe_reload()
    assert f.backend == "nn"


def test_metadata_only_change_triggers_a_reload(tmp_path: Path) -> None:
    install(tmp_path, "nn", threshold=0.7)
    f = MLFilter(tmp_path, threshold=0.5, threshold_mode="model")
    assert f.threshold == 0.7
    install(tmp_path, "nn", threshold=0.4)  # same ONNX bytes, new metadata
    f.maybe_reload()
    assert f.threshold == 0.4


def test_hot_reload_can_be_switched_off(tmp_path: Path) -> None:
    f = MLFilter(tmp_path, hot_reload=False)
    install(tmp_path, "nn")
    f.maybe_reload()
    assert not f.has_model
    f.reload()  # an explicit reload still works
    assert f.has_model


def test_no_ml_filter_disables_everything(tmp_path: Path) -> None:
    install(tmp_path, "nn")
    f = MLFilter(tmp_path, disabled=True, threshold=0.99)
    assert not f.has_model
    d = f.decide(row(0.0))
    assert (d.allowed, d.proba, d.backend, d.reason) == (True, None, None, "disabled")
    install(tmp_path, "lgbm")
    f.maybe_reload()
    assert not f.has_model and f.status()["disabled"]


# --------------------------------------------------------------------------- thresholds and errors


def test_threshold_mode_model_uses_the_stored_operating_threshold(tmp_path: Path) -> None:
    install(tmp_path, "nn", threshold=0.70)
    by_config = MLFilter(tmp_path, threshold=0.60)
    by_model = MLFilter(tmp_path, threshold=0.60, threshold_mode="model")
    assert by_config.decide(row(0.65)).allowed
    assert not by_model.decide(row(0.65)).allowed and by_model.threshold == 0.70
    install(tmp_path / "other", "nn", threshold=None)  # no stored threshold: the configured one
    assert MLFilter(tmp_path / "other", threshold=0.6, threshold_mode="model").threshold == 0.6


def test_wrong_feature_length_is_rejected_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(tmp_path, "nn")
    f = MLFilter(tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        d = f.decide(np.zeros(18))
    assert (d.allowed, d.backend, d.reason) == (False, "nn", "inference_error")
    assert f.error_count == 1 and "expected 26 features, got 18" in f.status()["last_error"]
    assert any(r.levelno == logging.WARNING for r in caplog.records)
    assert f.decide(row(0.9)).allowed  # the filter keeps working afterwards


def test_inference_exception_rejects(tmp_path: Path) -> None:
    install(tmp_path, "lgbm")
    f = MLFilter(tmp_path)
    bad = np.array(["x"] * N_FEAT, dtype=object)  # the design-point object-dtype row
    assert f.decide(bad).reason == "inference_error"
    nan_p = f.decide(row(float("nan")))  # the probe passes NaN through: non-finite probability
    assert (nan_p.allowed, nan_p.reason) == (False, "inference_error")
    assert f.error_count == 2


def test_a_pandas_row_is_restricted_to_feature_cols_by_name(tmp_path: Path) -> None:
    import pandas as pd

    install(tmp_path, "lgbm")
    f = MLFilter(tmp_path, threshold=0.6)
    names = ["close", *reversed(FEATURE_COLS), "atr"]  # extra columns, another order
    values = {n: 0.0 for n in names} | {FEATURE_COLS[0]: 0.65, "close": 123.0}
    d = f.decide(pd.Series(values)[names])
    assert d.allowed and d.proba == pytest.approx(0.65)
    assert f.decide(pd.Series({"close": 1.0})).reason == "inference_error"  # names missing


def test_from_config_uses_the_symbol_folder_and_settings(tmp_path: Path) -> None:
    from perpbot.config import AppConfig

    install(tmp_path / "xrpusdt", "lgbm", threshold=0.9)
    cfg = AppConfig(ml_threshold=0.6, ml_threshold_mode="model", ml_backends=("lgbm",))
    f = MLFilter.from_config(tmp_path, "XRPUSDT", cfg)
    assert f.backend == "lgbm" and f.threshold == 0.9
    assert MLFilter.from_config(tmp_path, "TRXUSDT", cfg).has_model is False  # no root fallback
    off = MLFilter.from_config(tmp_path, "XRPUSDT", AppConfig(no_ml_filter=True))
    assert off.disabled and not off.has_model


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        MLFilter(tmp_path, backends=("mlx",))
    with pytest.raises(ModelError):
        MLFilter(tmp_path, threshold_mode="auto")
    with pytest.raises(ModelError):
        MLFilter(tmp_path, threshold=1.5)


def test_predict_proba_batch(tmp_path: Path) -> None:
    f = MLFilter(tmp_path)
    with pytest.raises(ModelError, match="no ML model"):
        f.predict_proba_batch(np.zeros((2, N_FEAT)))
    install(tmp_path, "lgbm")
    f.reload()
    X = np.zeros((5, N_FEAT))
    X[:, 0] = np.linspace(0, 1, 5)
    assert np.allclose(f.predict_proba_batch(X), X[:, 0], atol=1e-7)
    assert f.predict_proba_batch(np.zeros((0, N_FEAT))).shape == (0,)
    with pytest.raises(ModelError):
        f.predict_proba_batch(np.zeros((2, 5)))


# --------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, dict[str, object]]:
    from perpbot.ml.lgbm_model import fit_lgbm
    from perpbot.ml.nn_model import fit_nn

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, N_FEAT))
    X[rng.random(1500) < 0.4, 21:25] = np.nan
    y = (X[:, 0] + X[:, 11] + rng.normal(size=1500) > 0.5).astype(float)
    folder = tmp_path_factory.mktemp("models") / "xrpusdt"
    lg = fit_lgbm(X[:1000], y[:1000], None, X[1000:1200], y[1000:1200], {"n_estimators": 60})
    nn = fit_nn(X[:1000], y[:1000], None, {"hidden_dim": 16, "epochs": 2})
    save_model(folder, "lgbm", lg.to_onnx(), metadata("lgbm"), native_text=lg.native_text())
    save_model(folder, "nn", nn.to_onnx(), metadata("nn"))
    Xt = X[1200:].copy()
    Xt[rng.random(Xt.shape) < 0.05] = np.nan
    return folder, Xt, {"lgbm": lg, "nn": nn}


@pytest.mark.parametrize("backend,dtype,tol", [("lgbm", "float64", 1e-5), ("nn", "float32", 1e-5)])
def test_served_probabilities_match_the_trained_models(
    trained_dir: tuple[Path, np.ndarray, dict[str, object]], backend: str, dtype: str, tol: float
) -> None:
    folder, Xt, models = trained_dir
    f = MLFilter(folder, backends=(backend,), threshold=0.5)
    assert f.backend == backend and f.status()["input_dtype"] == dtype
    expected = models[backend].predict_proba(Xt)  # type: ignore[attr-defined]
    single = np.array([f.decide(x).proba for x in Xt])
    assert np.abs(single - expected).max() <= tol
    assert np.abs(f.predict_proba_batch(Xt) - expected).max() <= tol
    assert all(f.decide(x).allowed == (p >= 0.5) for x, p in zip(Xt[:50], single[:50], strict=True))


def test_live_filter_imports_neither_lightgbm_nor_torch(
    trained_dir: tuple[Path, np.ndarray, dict[str, object]],
) -> None:
    folder, _, _ = trained_dir
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from perpbot.ml.filter import MLFilter
        for backend in ("nn", "lgbm"):
            f = MLFilter({str(folder)!r}, backends=(backend,))
            assert f.backend == backend, f.status()
            f.decide(np.zeros(26)); f.maybe_reload(); f.predict_proba_batch(np.zeros((3, 26)))
        loaded = sorted(m for m in ("lightgbm", "torch", "onnxmltools", "skl2onnx") if m in sys.modules)
        assert not loaded, loaded
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
