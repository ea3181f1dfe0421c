"""Neural filter: SPEC §6.2 architecture, normalisation once and identical in training and serving,
torch / numpy / onnxruntime agreement (≤ 1e-5) on rows with NaN, determinism, the missing-extra error."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest

from perpbot.errors import InsufficientDataError, ModelError
from perpbot.ml.features import FEATURE_COLS, OPTIONAL_FEATURES
from perpbot.ml.nn_model import NN_EXTRA_MESSAGE, NNModel, Normalizer, fit_nn
from tests.support.ml import cpu_session

try:  # the nn extra is optional: without it only the tests that need no training run
    import torch
except ImportError:  # pragma: no cover - the dev environment has torch
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the nn extra) is not installed")

N_FEAT = len(FEATURE_COLS)
OPT_IDX = [FEATURE_COLS.index(c) for c in OPTIONAL_FEATURES]
FAST = {"hidden_dim": 32, "epochs": 3}


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature-like columns on very different scales (RSI ~50, returns ~1e-3), OI columns partly
    NaN, funding all NaN (as in the real files without OI history)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEAT))
    X[:, FEATURE_COLS.index("rsi")] = rng.uniform(5, 95, n)
    X[:, FEATURE_COLS.index("ret_1")] *= 1e-3
    X[:, FEATURE_COLS.index("signal_strength")] = rng.integers(0, 7, n)
    for j in OPT_IDX:
        X[rng.random(n) < 0.5, j] = np.nan
    X[:, FEATURE_COLS.index("funding_rate")] = np.nan
    logit = 0.05 * (X[:, 0] - 50) + X[:, 1] + np.nan_to_num(X[:, OPT_IDX[0]]) + rng.normal(0, 1, n)
    return X, (logit > 0).astype(np.float64)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return make_data(1200, seed=4)


@pytest.fixture(scope="module")
def model(data: tuple[np.ndarray, np.ndarray]) -> NNModel:
    X, y = data
    return fit_nn(X[:1000], y[:1000], np.linspace(0.5, 1.5, 1000), FAST, seed=42)


def rows_with_nan(seed: int = 9) -> np.ndarray:
    X, _ = make_data(500, seed)
    rng = np.random.default_rng(seed)
    X[rng.random(X.shape) < 0.1] = np.nan  # NaN anywhere, not only in the OI columns
    X[0] = np.nan  # a fully missing row
    return X


def torch_proba(m: NNModel, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logit = m.module(torch.from_numpy(m.norm.transform(X))).squeeze(-1)
        return torch.sigmoid(logit).double().numpy()


# --------------------------------------------------------------------------- normalisation


def test_normalizer_is_nan_aware_and_handles_all_nan_columns() -> None:
    X = np.array([[1.0, np.nan, 5.0], [3.0, np.nan, 5.0], [np.nan, np.nan, 5.0]])
    n = Normalizer.fit(X)
    assert n.mean.dtype == np.float32 and n.std.dtype == np.float32
    assert n.mean.tolist() == [2.0, 0.0, 5.0]
    assert n.std[0] == np.float32(1.0 + 1e-8)  # population std of (1, 3), NaN skipped
    assert n.std[1] == np.float32(1.0)  # all-NaN column: mean 0, std 1
    assert n.std[2] == np.float32(1e-8)  # constant column: std 0 + 1e-8
    z = n.transform(X)
    assert z.dtype == np.float32 and not np.isnan(z).any()
    assert z[2, 0] == 0.0 and z[0, 0] == np.float32(-1.0)  # NaN -> 0 after scaling


@needs_torch
def test_normalisation_is_fitted_once_on_the_training_part(
    model: NNModel, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = data
    expected = Normalizer.fit(X[:1000])
    assert np.array_equal(model.norm.mean, expected.mean) and np.array_equal(model.norm.std, expected.std)
    assert not np.array_equal(model.norm.mean, Normalizer.fit(X).mean)


@needs_torch
def test_graph_normalisation_is_bit_identical_to_training(model: NNModel) -> None:
    """Expose the graph's normalised matrix (output of the IsNaN/Where step) and compare it with
    the function training used."""
    m = onnx.load_from_string(model.to_onnx())
    m.graph.output.append(onnx.helper.make_tensor_value_info("x_norm", onnx.TensorProto.FLOAT, ["N", N_FEAT]))
    X = rows_with_nan()
    graph_norm = cpu_session(m.SerializeToString()).run(["x_norm"], {"X": X.astype(np.float32)})[0]
    assert np.array_equal(graph_norm, model.norm.transform(X))
    assert not np.isnan(graph_norm).any()


# --------------------------------------------------------------------------- fidelity


@needs_torch
def test_torch_numpy_and_onnxruntime_agree_on_rows_with_nan(model: NNModel) -> None:
    X = rows_with_nan()
    p_np = model.predict_proba(X)
    p_torch = torch_proba(model, X)
    p_onnx = cpu_session(model.to_onnx()).run(["proba"], {"X": X.astype(np.float32)})[0]
    assert p_onnx.shape == (len(X),) and not np.isnan(p_onnx).any()
    assert np.abs(p_np - p_torch).max() <= 1e-5
    assert np.abs(p_np - p_onnx).max() <= 1e-5
    assert np.all((p_np >= 0) & (p_np <= 1))


@needs_torch
def test_reload_from_onnx_reproduces_predictions(model: NNModel) -> None:
    X = rows_with_nan()
    again = NNModel.from_onnx(model.to_onnx())
    assert np.abs(again.predict_proba(X) - model.predict_proba(X)).max() <= 1e-5
    assert again.metadata() == model.metadata()
    with pytest.raises(ModelError):
        NNModel.from_onnx(b"not an onnx file")


@needs_torch
def test_onnx_graph_contract(model: NNModel) -> None:
    m = onnx.load_from_string(model.to_onnx())
    onnx.checker.check_model(m, full_check=True)
    assert m.ir_version == 8 and [(o.domain, o.version) for o in m.opset_import] == [("", 17)]
    (inp,) = m.graph.input
    (out,) = m.graph.output
    assert inp.name == "X" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert inp.type.tensor_type.shape.dim[1].dim_value == N_FEAT
    assert out.name == "proba" and len(out.type.tensor_type.shape.dim) == 1
    ops = [n.op_type for n in m.graph.node]
    assert ops == [
        "Sub",
        "Div",
        "IsNaN",
        "Where",
        "Gemm",
        "Relu",
        "Gemm",
        "Relu",
        "Gemm",
        "Sigmoid",
        "Squeeze",
    ]
    assert all(
        a.i == 1 for n in m.graph.node if n.op_type == "Gemm" for a in n.attribute if a.name == "transB"
    )


# --------------------------------------------------------------------------- training


@needs_torch
def test_architecture_follows_the_spec(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    m = fit_nn(X[:300], y[:300], epochs=1)  # default hidden size
    assert (m.w1.shape, m.w2.shape, m.w3.shape) == ((128, N_FEAT), (64, 128), (1, 64))
    layers = [type(x).__name__ for x in m.module]
    assert layers == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]
    assert m.module[2].p == 0.2
    assert not m.module.training  # dropout off for every prediction
    assert m.params["lr"] == 1e-3 and m.params["batch_size"] == 256


@needs_torch
def test_training_is_deterministic_and_seeded(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = fit_nn(X[:600], y[:600], None, FAST, seed=7)
    after = torch.rand(1)
    b = fit_nn(X[:600], y[:600], None, FAST, seed=7)
    c = fit_nn(X[:600], y[:600], None, FAST, seed=8)
    assert a.to_onnx() == b.to_onnx()
    assert not np.array_equal(a.w1, c.w1)
    assert torch.equal(before, after)  # the caller's torch RNG stream is untouched


@needs_torch
def test_loss_is_weighted(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Zero-weight samples contribute nothing: flipping their labels cannot change the model.
    (With an unweighted loss it would.)"""
    X, y = data
    w = np.ones(600)
    w[::3] = 0.0
    flipped = y[:600].copy()
    flipped[::3] = 1.0 - flipped[::3]
    a = fit_nn(X[:600], y[:600], w, FAST, seed=1)
    b = fit_nn(X[:600], flipped, w, FAST, seed=1)
    c = fit_nn(X[:600], flipped, None, FAST, seed=1)
    assert np.array_equal(a.w1, b.w1) and np.array_equal(a.w3, b.w3)
    assert not np.array_equal(a.w3, c.w3)


@needs_torch
def test_bad_inputs_are_refused(data: tuple[np.ndarray, np.ndarray], model: NNModel) -> None:
    X, _ = data
    with pytest.raises(InsufficientDataError):
        fit_nn(X[:50], np.ones(50), epochs=1)
    with pytest.raises(ModelError):
        fit_nn(X[:50], np.r_[np.zeros(25), np.ones(25)], -np.ones(50), epochs=1)
    with pytest.raises(ModelError, match="expects 26 features"):
        model.predict_proba(np.zeros((2, 20)))


def test_missing_torch_gives_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = data
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ModelError) as err:
        fit_nn(X[:100], y[:100], epochs=1)
    assert str(err.value) == NN_EXTRA_MESSAGE == "the neural filter needs the nn extra: pip install '.[nn]'"
