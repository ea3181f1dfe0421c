"""The model a filter serves: an onnxruntime session built from verified model files, with its
pre-allocated input buffer, feed dict and output list, checked by one test inference.

Separate from ``filter.py`` (which decides *which* model to serve, when to reload and what a
probability means for an entry) because this is the onnxruntime side: session options, the
input dtype the graph declares, and the checks that make a model that loads but cannot score a
neutral row count as broken. Imports neither ``lightgbm`` nor ``torch``, like the filter.

Input dtype: the row arrives as float64 in ``FEATURE_COLS`` order and is cast to the dtype
the model's ONNX input declares (float64 for LightGBM, whose export is exact in float64;
float32 for the MLP). NaN is passed through: both graphs treat it as "missing" the way their
training did.

Latency: a decision reuses one session (1 intra-op, 1 inter-op thread, sequential execution), a
pre-allocated ``(1, 26)`` input buffer held in a pre-built feed dict and a pre-built output-name
list; the only per-call work is one copy into the buffer and ``session.run``. (IOBinding and
``run_with_ort_values`` were measured and are ~5× slower for a single row.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from perpbot.errors import ModelError
from perpbot.ml.artifacts import ModelFiles

OUTPUT_NAME = "proba"
_DTYPES: dict[str, type[np.floating[Any]]] = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@dataclass(frozen=True)
class ServedModel:
    """Everything a decision needs, built once per load."""

    backend: str
    session: ort.InferenceSession
    input_name: str
    dtype: type[np.floating[Any]]
    buf: np.ndarray  # (1, n_features), reused by every decide()
    flat: np.ndarray  # 1-D view of buf
    feeds: dict[str, np.ndarray]
    outputs: list[str]
    n_features: int
    threshold: float
    metadata: dict[str, Any]
    path: Path
    loaded_at: str


def build_served_model(files: ModelFiles, n_features: int, threshold: float) -> ServedModel:
    """An onnxruntime session for ``files``, checked by one test inference; ``ModelError`` naming
    the file when it does not load, has the wrong input or output, or does not score a neutral row."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only; warnings would flood the bot log
    try:
        session = ort.InferenceSession(files.onnx_bytes, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{files.onnx_path}: not a loadable ONNX model ({one_line(exc)})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].type not in _DTYPES:
        raise ModelError(
            f"{files.onnx_path}: expected one float/double input, got {[i.type for i in inputs]}"
        )
    shape = inputs[0].shape
    if len(shape) != 2 or shape[1] != n_features:
        raise ModelError(f"{files.onnx_path}: input shape {shape}, the code has {n_features} features")
    if OUTPUT_NAME not in [o.name for o in session.get_outputs()]:
        raise ModelError(f"{files.onnx_path}: no {OUTPUT_NAME!r} output; not a perpbot filter model")
    dtype = _DTYPES[inputs[0].type]
    buf = np.zeros((1, n_features), dtype=dtype)
    feeds = {inputs[0].name: buf}
    outputs = [OUTPUT_NAME]
    try:  # a model that cannot score a neutral row is as broken as one that does not parse
        probe = session.run(outputs, feeds)[0]
        p = float(np.asarray(probe).reshape(-1)[0])
    except Exception as exc:
        raise ModelError(f"{files.onnx_path}: test inference failed ({one_line(exc)})") from None
    if np.asarray(probe).shape != (1,) or not (0.0 <= p <= 1.0):
        raise ModelError(f"{files.onnx_path}: output {np.asarray(probe).shape} / {p!r} is not a probability")
    return ServedModel(
        backend=files.backend,
        session=session,
        input_name=inputs[0].name,
        dtype=dtype,
        buf=buf,
        flat=buf.reshape(-1),
        feeds=feeds,
        outputs=outputs,
        n_features=n_features,
        threshold=threshold,
        metadata=files.metadata,
        path=files.onnx_path,
        loaded_at=datetime.now(UTC).isoformat(),
    )
