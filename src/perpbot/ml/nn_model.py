"""Neural entry filter (SPEC §6.2): a small MLP trained with torch on CPU, served as one ONNX file.

Architecture: ``Linear(26→H) → ReLU → Dropout(0.2) → Linear(H→H/2) → ReLU → Linear(H/2→1)``,
logit output, sigmoid for the probability; H = 128. Loss: BCE-with-logits, weighted mean
``Σ(l·w)/Σw``; Adam, lr 1e-3, 100 epochs, batch 256, a fresh seeded permutation every epoch.

Normalisation is the part that went wrong at the design point (normalised twice in walk-forward;
NaN left to the server, which produced NaN probabilities), so it is defined once here:

* statistics are computed **once**, on the training part only: per-column NaN-aware mean and
  population std (an all-NaN column gets mean 0, std 1), then ``std += 1e-8``; they are stored as
  float32 and every later step uses those float32 values;
* ``x̂ = (x − μ)/σ`` in float32, then NaN → 0 (NaN means "missing", i.e. "at the mean").

:meth:`Normalizer.transform` is the only implementation used by training and by
:meth:`NNModel.predict_proba`; the ONNX graph performs the same float32 ``Sub``/``Div`` with the
same constants followed by ``IsNaN``/``Where``, so the server cannot diverge from training (the
test compares the graph's normalised matrix with ``transform`` bit for bit).

Why the ONNX graph is assembled with ``onnx.helper`` instead of ``torch.onnx.export``: the graph is
five ops that the SPEC specifies exactly (Sub, Div, Gemm with transposed B, Relu, Sigmoid,
Squeeze), the weights are plain arrays after training, and building it directly is deterministic
(same weights → same bytes → same sha256 in the metadata), needs neither torch nor onnxscript at
export time, and avoids exporter quirks (dynamo graph rewrites, opset drift, dropout/training-mode
artefacts). torch is needed only to *train*.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perpbot.errors import InsufficientDataError, ModelError
from perpbot.ml.decision import feature_matrix

log = logging.getLogger(__name__)

DEFAULT_NN_PARAMS: dict[str, Any] = {
    "hidden_dim": 128,
    "dropout": 0.2,
    "lr": 1e-3,
    "epochs": 100,
    "batch_size": 256,
}

NN_EXTRA_MESSAGE = "the neural filter needs the nn extra: pip install '.[nn]'"
STD_EPS = 1e-8
ONNX_INPUT_NAME = "X"
ONNX_OUTPUT_NAME = "proba"
ONNX_NORM_NAME = "x_norm"  # the normalised, NaN-replaced matrix inside the graph
ONNX_OPSET = 17
ONNX_IR_VERSION = 8


def _import_torch() -> Any:
    """torch is an optional extra; the live bot never imports it (serving is onnxruntime)."""
    try:
        import torch
    except ImportError:
        raise ModelError(NN_EXTRA_MESSAGE) from None
    return torch


@dataclass(frozen=True)
class Normalizer:
    """Per-column float32 mean/std fitted once on the training part (module docstring)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Normalizer:
        X = np.asarray(X, dtype=np.float64)
        finite_cols = ~np.isnan(X).all(axis=0)
        mean = np.zeros(X.shape[1])
        std = np.ones(X.shape[1])
        if finite_cols.any():
            mean[finite_cols] = np.nanmean(X[:, finite_cols], axis=0)
            std[finite_cols] = np.nanstd(X[:, finite_cols], axis=0)
        return cls(mean=mean.astype(np.float32), std=(std + STD_EPS).astype(np.float32))

    def transform(self, X: Any) -> np.ndarray:
        """float32 ``(x − μ)/σ`` with NaN → 0; the graph does exactly these float32 operations."""
        x = np.asarray(X, dtype=np.float32)
        z = (x - self.mean) / self.std
        z[np.isnan(z)] = 0.0
        return z


@dataclass
class NNModel:
    """Trained MLP weights (float32 numpy, torch layout ``W[out, in]``) plus the normaliser."""

    norm: Normalizer
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    w3: np.ndarray
    b3: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)
    module: Any = field(default=None, repr=False, compare=False)  # torch module when just trained

    @property
    def n_features(self) -> int:
        return int(self.w1.shape[1])

    @property
    def hidden_dim(self) -> int:
        return int(self.w1.shape[0])

    def _matrix(self, X: Any) -> np.ndarray:
        return feature_matrix(X, self.n_features, "neural filter")

    def logits(self, X: Any) -> np.ndarray:
        """float32 logits [n] computed with numpy in eval mode (no dropout)."""
        z = self.norm.transform(self._matrix(X))
        h1 = np.maximum(z @ self.w1.T + self.b1, 0.0)
        h2 = np.maximum(h1 @ self.w2.T + self.b2, 0.0)
        return (h2 @ self.w3.T + self.b3)[:, 0]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class-1 probability, float64 [n]; NaN inputs are handled by the normaliser."""
        return 1.0 / (1.0 + np.exp(-self.logits(X).astype(np.float64)))

    def metadata(self) -> dict[str, Any]:
        """What SPEC §6.2 stores with the model (the ONNX file holds the same constants)."""
        return {
            "mean": [float(v) for v in self.norm.mean],
            "std": [float(v) for v in self.norm.std],
            "input_dim": self.n_features,
            "hidden_dim": self.hidden_dim,
        }

    def to_onnx(self) -> bytes:
        """One self-contained ONNX file: ``X`` float32 [N, 26] → ``proba`` float32 [N].

        Sub(μ) → Div(σ) → IsNaN/Where(→0) → Gemm(transB)+Relu → Gemm(transB)+Relu → Gemm(transB)
        → Sigmoid → Squeeze(−1); opset 17, IR 8, checked with the ONNX checker.
        """
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        def const(name: str, arr: np.ndarray) -> onnx.TensorProto:
            return numpy_helper.from_array(np.ascontiguousarray(arr), name)

        f32 = np.float32
        inits = [
            const("mean", self.norm.mean.astype(f32)),
            const("std", self.norm.std.astype(f32)),
            const("zero", np.zeros((), dtype=f32)),
            const("W1", self.w1.astype(f32)),
            const("B1", self.b1.astype(f32)),
            const("W2", self.w2.astype(f32)),
            const("B2", self.b2.astype(f32)),
            const("W3", self.w3.astype(f32)),
            const("B3", self.b3.astype(f32)),
            const("squeeze_axes", np.array([-1], dtype=np.int64)),
        ]
        nodes = [
            helper.make_node("Sub", [ONNX_INPUT_NAME, "mean"], ["x_centered"], name="center"),
            helper.make_node("Div", ["x_centered", "std"], ["x_scaled"], name="scale"),
            helper.make_node("IsNaN", ["x_scaled"], ["x_isnan"], name="isnan"),
            helper.make_node("Where", ["x_isnan", "zero", "x_scaled"], [ONNX_NORM_NAME], name="nan_to_zero"),
            helper.make_node("Gemm", [ONNX_NORM_NAME, "W1", "B1"], ["g1"], transB=1, name="fc1"),
            helper.make_node("Relu", ["g1"], ["h1"], name="relu1"),
            helper.make_node("Gemm", ["h1", "W2", "B2"], ["g2"], transB=1, name="fc2"),
            helper.make_node("Relu", ["g2"], ["h2"], name="relu2"),
            helper.make_node("Gemm", ["h2", "W3", "B3"], ["logit"], transB=1, name="fc3"),
            helper.make_node("Sigmoid", ["logit"], ["p2d"], name="sigmoid"),
            helper.make_node("Squeeze", ["p2d", "squeeze_axes"], [ONNX_OUTPUT_NAME], name="squeeze"),
        ]
        graph = helper.make_graph(
            nodes,
            "perpbot_nn_filter",
            [helper.make_tensor_value_info(ONNX_INPUT_NAME, TensorProto.FLOAT, ["N", self.n_features])],
            [helper.make_tensor_value_info(ONNX_OUTPUT_NAME, TensorProto.FLOAT, ["N"])],
            initializer=inits,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
            producer_name="perpbot",
            doc_string="MLP entry filter; normalisation and NaN->0 inside the graph (perpbot.ml.nn_model)",
        )
        model.ir_version = ONNX_IR_VERSION
        helper.set_model_props(model, {"backend": "nn", "input_dtype": "float32"})
        onnx.checker.check_model(model, full_check=True)
        return model.SerializeToString()

    @classmethod
    def from_onnx(cls, data: bytes, params: Mapping[str, Any] | None = None) -> NNModel:
        """Rebuild the numpy model from an ONNX file written by :meth:`to_onnx`."""
        import onnx
        from onnx import numpy_helper

        try:
            model = onnx.load_from_string(data)
        except Exception as exc:  # protobuf raises its own DecodeError family
            raise ModelError(f"neural filter ONNX is not readable: {exc}") from None
        t = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        need = ("mean", "std", "W1", "B1", "W2", "B2", "W3", "B3")
        missing = [k for k in need if k not in t]
        if missing:
            raise ModelError(f"neural filter ONNX lacks {', '.join(missing)}; not written by perpbot")
        return cls(
            norm=Normalizer(mean=t["mean"].astype(np.float32), std=t["std"].astype(np.float32)),
            w1=t["W1"],
            b1=t["B1"],
            w2=t["W2"],
            b2=t["B2"],
            w3=t["W3"],
            b3=t["B3"],
            params=dict(params or {}),
        )


def effective_params(params: Mapping[str, Any] | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Defaults overridden by ``params`` (then by ``epochs``), validated."""
    p = {**DEFAULT_NN_PARAMS, **dict(params or {})}
    if epochs is not None:
        p["epochs"] = epochs
    p["hidden_dim"], p["epochs"], p["batch_size"] = (
        int(p["hidden_dim"]),
        int(p["epochs"]),
        int(p["batch_size"]),
    )
    p["lr"], p["dropout"] = float(p["lr"]), float(p["dropout"])
    if p["hidden_dim"] < 2 or p["epochs"] < 1 or p["batch_size"] < 1:
        raise ModelError(f"neural filter parameters out of range: {p}")
    if not (0.0 <= p["dropout"] < 1.0) or not (p["lr"] > 0 and math.isfinite(p["lr"])):
        raise ModelError(f"neural filter parameters out of range: {p}")
    return p


def fit_nn(
    X_train: Any,
    y_train: Any,
    w_train: Any | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int = 42,
    epochs: int | None = None,
) -> NNModel:
    """Train the MLP on CPU (SPEC §6.2) and return its numpy/ONNX form.

    Deterministic for a given seed: weights are initialised and dropout masks drawn under
    ``torch.manual_seed(seed)`` inside a forked RNG state (the caller's torch RNG is untouched),
    batches follow ``numpy.random.default_rng(seed)`` permutations, and deterministic algorithms
    are switched on for the duration of the fit (then restored).
    """
    torch = _import_torch()
    p = effective_params(params, epochs)
    X = np.asarray(X_train, dtype=np.float64)
    y = np.asarray(y_train, dtype=np.float64).ravel()
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ModelError(f"training slice: X {X.shape} and y {y.shape} do not align")
    if X.shape[0] == 0 or len(np.unique(y)) < 2:
        raise InsufficientDataError(f"training slice has {X.shape[0]} samples and fewer than two classes")
    w = np.ones_like(y) if w_train is None else np.asarray(w_train, dtype=np.float64).ravel()
    if w.shape != y.shape or not np.isfinite(w).all() or (w < 0).any():
        raise ModelError("training weights must be finite, non-negative and one per sample")

    norm = Normalizer.fit(X)
    Xn = norm.transform(X)  # the same function predict_proba uses
    n, d = Xn.shape
    hidden = p["hidden_dim"]
    nn = torch.nn

    prev_det = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        try:
            module = nn.Sequential(
                nn.Linear(d, hidden),
                nn.ReLU(),
                nn.Dropout(p["dropout"]),
                nn.Linear(hidden, hidden // 2),
                nn.ReLU(),
                nn.Linear(hidden // 2, 1),
            )
            opt = torch.optim.Adam(module.parameters(), lr=p["lr"])
            xt = torch.from_numpy(Xn)
            yt = torch.from_numpy(y.astype(np.float32))
            wt = torch.from_numpy(w.astype(np.float32))
            rng = np.random.default_rng(seed)
            bs = p["batch_size"]
            module.train()
            for epoch in range(p["epochs"]):
                perm = torch.from_numpy(rng.permutation(n))
                total = 0.0
                for start in range(0, n, bs):
                    idx = perm[start : start + bs]
                    wb = wt[idx]
                    wsum = wb.sum()
                    if float(wsum) <= 0.0:
                        continue
                    logit = module(xt[idx]).squeeze(-1)
                    loss_each = torch.nn.functional.binary_cross_entropy_with_logits(
                        logit, yt[idx], reduction="none"
                    )
                    loss = (loss_each * wb).sum() / wsum
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                if epoch % 10 == 0 or epoch == p["epochs"] - 1:
                    log.debug("nn epoch %d: weighted loss %.5f", epoch, total / n)
            module.eval()
        finally:
            torch.use_deterministic_algorithms(prev_det)

    lin = [m for m in module if isinstance(m, nn.Linear)]

    def arr(t: Any) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32).copy()

    return NNModel(
        norm=norm,
        w1=arr(lin[0].weight),
        b1=arr(lin[0].bias),
        w2=arr(lin[1].weight),
        b2=arr(lin[1].bias),
        w3=arr(lin[2].weight),
        b3=arr(lin[2].bias),
        params={**p, "seed": seed},
        module=module,
    )
