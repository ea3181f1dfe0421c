"""What is in the models folder, per symbol and backend: is it servable, and what was it trained on.

Why: before a backtest or a deploy a user wants one screen that says, per symbol, which backends
exist, the candles they learnt from, the deploy gate's verdict (when training recorded one), the
threshold they serve at, how old they are, and whether they still match the code's feature
schema. Every check is the one the filter itself applies (``artifacts.read_model``: metadata
present and valid, ONNX bytes matching the recorded sha256, schema hash), so "ok" here means the
filter will load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from perpbot.data.schema import model_dir as symbol_model_dir
from perpbot.errors import ModelError
from perpbot.ml.artifacts import BACKENDS, check_schema, load_metadata, metadata_path, onnx_path, read_model


@dataclass(frozen=True, slots=True)
class ModelStatus:
    symbol: str
    backend: str
    path: Path
    present: bool
    ok: bool = False
    problem: str | None = None  # why the filter would refuse it
    train_start: str | None = None
    train_end: str | None = None
    gate: str | None = None  # "pass" / "fail" (+ reason) when training recorded a verdict
    threshold: float | None = None
    created_at: str | None = None
    age_days: float | None = None
    samples: int | None = None
    schema: str = "-"  # match | mismatch | unknown (metadata unreadable) | - (no model)


def gate_verdict(meta: Mapping[str, Any]) -> str | None:
    """The deploy gate's verdict as one phrase, whatever shape the metadata stores it in."""
    gate = meta.get("gate")
    if gate is None:
        return None
    if isinstance(gate, Mapping):
        verdict = gate.get("verdict", gate.get("status", gate.get("result")))
        reason = gate.get("reason")
        text = str(verdict) if verdict is not None else "recorded"
        return f"{text} ({reason})" if reason else text
    reason = meta.get("gate_reason")
    return f"{gate} ({reason})" if reason else str(gate)


def _age_days(created: Any, now: datetime) -> float | None:
    if not isinstance(created, str):
        return None
    try:
        when = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return (now - when).total_seconds() / 86_400


def model_status(models_root: Path, symbol: str, backend: str, now: datetime) -> ModelStatus:
    """Inspect one backend of one symbol (never raises for a bad model: it is reported)."""
    folder = symbol_model_dir(models_root, symbol)
    path = onnx_path(folder, backend)
    if not path.exists():
        return ModelStatus(symbol, backend, path, present=False)
    try:
        files = read_model(folder, backend)
    except ModelError as exc:
        return ModelStatus(
            symbol, backend, path, present=True, problem=str(exc), schema=_schema(folder, backend)
        )
    if files is None:  # removed between the two looks
        return ModelStatus(symbol, backend, path, present=False)
    meta = files.metadata
    window = meta.get("training_window") if isinstance(meta.get("training_window"), Mapping) else {}
    threshold = meta.get("operating_threshold")
    return ModelStatus(
        symbol=symbol,
        backend=backend,
        path=path,
        present=True,
        ok=True,
        train_start=window.get("start"),
        train_end=window.get("end"),
        gate=gate_verdict(meta),
        threshold=float(threshold) if isinstance(threshold, int | float) else None,
        created_at=meta.get("created_at"),
        age_days=_age_days(meta.get("created_at"), now),
        samples=meta.get("n_samples") if isinstance(meta.get("n_samples"), int) else None,
        schema="match",
    )


def _schema(folder: Path, backend: str) -> str:
    """Whether a refused model's metadata at least matches the code's feature schema."""
    try:
        meta = load_metadata(metadata_path(folder, backend))
    except ModelError:
        return "unknown"
    try:
        check_schema(meta)
    except ModelError:
        return "mismatch"
    return "match"


def models_inventory(models_root: Path, symbols: list[str], now: datetime) -> list[ModelStatus]:
    """Every backend of every symbol, in symbol then backend order."""
    return [model_status(models_root, s, b, now) for s in symbols for b in BACKENDS]
