"""Model files on disk: per-symbol layout, metadata, atomic saves with backups, training log.

Deployment (staging → live) lives in :mod:`perpbot.ml.deploy`, on top of these functions.

Layout (``models/<symbol lowercase>/``)::

    lgbm_filter.onnx   lgbm_filter.json   lgbm_filter.txt (LightGBM native text)
    nn_filter.onnx     nn_filter.json
    *_prev.*           the previous version of each of those files (one generation)
    training_log.json  append-only list of training runs

No pickle/joblib anywhere: a model is ONNX (+ LightGBM's own text format) and JSON.

Why the write order is metadata → native text → ONNX
-----------------------------------------------------
Two files cannot be replaced in one atomic step, so consistency is enforced by *binding* rather
than by timing: the metadata records the sha256 of the ONNX bytes it describes, and every reader
(:func:`read_model`, the filter, :mod:`perpbot.ml.deploy`) refuses a pair whose hashes differ. The order then
decides what a reader can observe in the instant between renames:

* The ONNX file is the commit point — a backend exists for the filter iff its ONNX exists. Writing
  it **last** means a first-time save never exposes an ONNX without metadata (which would look like
  a broken model); a reader only sees "no model yet".
* When replacing a model, a reader between the two renames sees new metadata with the old ONNX:
  the sha256 differs, that backend is skipped for this load attempt (the filter falls back to the
  next backend), and the ONNX rename that follows changes the file stamp, so the next
  ``maybe_reload`` picks up the complete new pair.

How the files are replaced (staged, fsync'ed, renamed with ``*_prev`` backups, rolled back on a
failed rename) is :mod:`perpbot.ml.atomic_files`; the training log and side files are
:mod:`perpbot.ml.training_log`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from perpbot.errors import ModelError
from perpbot.fileio import jsonable
from perpbot.ml.atomic_files import replace_files
from perpbot.ml.features import FEATURE_COLS, FEATURE_SCHEMA_VERSION, feature_schema_hash

BACKENDS: tuple[str, ...] = ("nn", "lgbm")
ONNX_FILES = {"nn": "nn_filter.onnx", "lgbm": "lgbm_filter.onnx"}
METADATA_FILES = {"nn": "nn_filter.json", "lgbm": "lgbm_filter.json"}
NATIVE_FILES = {"lgbm": "lgbm_filter.txt"}
TRAINING_LOG = "training_log.json"
SIDECAR_FILES = (TRAINING_LOG, "active_lgbm_params.json")  # the log is appended to, params replaced
METADATA_FORMAT = 1
# Fields save_model() computes itself; a caller's values are overwritten.
_DERIVED = ("backend", "onnx_file", "onnx_sha256", "native_file", "native_sha256", "metadata_format")
_VERSIONED = ("lightgbm", "onnx", "onnxruntime", "torch", "numpy", "perpbot")


# --------------------------------------------------------------------------- names and helpers


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ModelError(f"unknown model backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


def onnx_path(model_dir: Path, backend: str) -> Path:
    return Path(model_dir) / ONNX_FILES[_check_backend(backend)]


def metadata_path(model_dir: Path, backend: str) -> Path:
    return Path(model_dir) / METADATA_FILES[_check_backend(backend)]


def native_path(model_dir: Path, backend: str) -> Path | None:
    return Path(model_dir) / NATIVE_FILES[backend] if _check_backend(backend) in NATIVE_FILES else None


def model_files(model_dir: Path, backend: str) -> list[Path]:
    """The files that make up one backend, in write order (metadata, native, ONNX)."""
    nat = native_path(model_dir, backend)
    return [metadata_path(model_dir, backend), *([nat] if nat else []), onnx_path(model_dir, backend)]


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def library_versions() -> dict[str, str | None]:
    """Installed versions, read from package metadata so nothing heavy (torch) gets imported."""
    out: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def utc_iso(value: Any) -> str | None:
    """UTC ISO-8601 text for a datetime / pandas Timestamp / epoch ms / ISO string (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC).isoformat()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    raise ModelError(f"cannot turn {value!r} into a UTC timestamp")


def json_bytes(obj: Any) -> bytes:
    """The bytes of a JSON file written here: indented, sorted keys, NaN refused (``jsonable`` first)."""
    return (json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- metadata


def build_metadata(
    backend: str,
    *,
    params: Mapping[str, Any],
    n_samples: int,
    train_start: Any = None,
    train_end: Any = None,
    data_sha256: str | None = None,
    data_file: str | Path | None = None,
    wf_metrics: Mapping[str, Any] | None = None,
    operating_threshold: float | None = None,
    symbol: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata a trained model is saved with (everything a later reader needs to trust it)."""
    meta: dict[str, Any] = {
        "backend": _check_backend(backend),
        "symbol": symbol,
        "feature_schema_hash": feature_schema_hash(),
        "feature_schema_version": FEATURE_SCHEMA_VERSION,
        "feature_names": list(FEATURE_COLS),
        "training_window": {"start": utc_iso(train_start), "end": utc_iso(train_end)},
        "data_file": None if data_file is None else str(data_file),
        "data_sha256": data_sha256,
        "walk_forward": dict(wf_metrics or {}),
        "operating_threshold": operating_threshold,
        "params": dict(params),
        "n_samples": int(n_samples),
        "library_versions": library_versions(),
        "created_at": datetime.now(UTC).isoformat(),
    }
    if extra:
        meta.update(extra)
    return jsonable(meta)


def load_metadata(path: Path) -> dict[str, Any]:
    """Read one metadata JSON file; ``ModelError`` naming the file when missing or malformed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: model metadata file is missing") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model metadata ({exc.strerror})") from None
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: model metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: model metadata must be a JSON object")
    return meta


def check_schema(metadata: Mapping[str, Any], *, source: str | Path | None = None) -> None:
    """Refuse a model built for another feature schema (ordered names + version)."""
    where = f"{source}: " if source else ""
    got = metadata.get("feature_schema_hash")
    if not got:
        raise ModelError(f"{where}model metadata has no feature_schema_hash; retrain the model")
    want = feature_schema_hash()
    if got != want:
        raise ModelError(
            f"{where}model was trained for feature schema {str(got)[:12]}, "
            f"code has {want[:12]}; retrain the model"
        )


@dataclass(frozen=True)
class ModelFiles:
    """One backend's files as read from disk: the ONNX bytes and the metadata that describes them."""

    backend: str
    onnx_bytes: bytes
    metadata: dict[str, Any]
    onnx_path: Path
    native_text: str | None = None


def read_model(model_dir: Path, backend: str, *, with_native: bool = False) -> ModelFiles | None:
    """Read and verify one backend; ``None`` when its ONNX does not exist (not an error).

    Raises ``ModelError`` (naming the file) for missing/corrupt metadata, an ONNX whose sha256 is
    not the one the metadata records (a half-finished or hand-copied deploy), or a feature-schema
    mismatch. The bytes returned are the bytes that were hashed, so the caller builds its session
    from exactly what was verified.
    """
    opath = onnx_path(model_dir, backend)
    try:
        data = opath.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelError(f"{opath}: cannot read model ({exc.strerror})") from None
    mpath = metadata_path(model_dir, backend)
    meta = load_metadata(mpath)
    if meta.get("backend") not in (None, backend):
        raise ModelError(f"{mpath}: metadata is for backend {meta.get('backend')!r}, not {backend!r}")
    want = meta.get("onnx_sha256")
    if want and want != sha256_bytes(data):
        raise ModelError(f"{opath}: file does not match {mpath.name} (sha256 differs); redeploy the model")
    check_schema(meta, source=opath)
    native = None
    nat = native_path(model_dir, backend)
    if with_native and nat is not None and nat.exists():
        try:
            native = nat.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"{nat}: cannot read the LightGBM text model ({_reason(exc)})") from None
        if meta.get("native_sha256") and meta["native_sha256"] != sha256_bytes(native.encode("utf-8")):
            raise ModelError(f"{nat}: file does not match {mpath.name} (sha256 differs)")
    return ModelFiles(backend, data, meta, opath, native)


def verify_model_files(model_dir: Path, backend: str) -> bool:
    """Check every file of one backend that exists; ``False`` when the backend has no file at all.

    Stricter than :func:`read_model` (which the live filter uses and which treats a missing ONNX
    as "no model"): metadata without its ONNX, a LightGBM text file the metadata names but that is
    missing, truncated or altered, and everything :func:`read_model` refuses raise ``ModelError``
    naming the file. Used where a silent fallback would mislabel a run (ML-on backtests, deploy).
    """
    folder = Path(model_dir)
    opath, mpath = onnx_path(folder, backend), metadata_path(folder, backend)
    nat = native_path(folder, backend)
    present = [p for p in (opath, mpath, nat) if p is not None and p.exists()]
    if not present:
        return False
    if not opath.exists():
        raise ModelError(f"{opath}: model file is missing ({present[0].name} exists without it)")
    files = read_model(folder, backend, with_native=True)
    assert files is not None
    declared = files.metadata.get("native_file")
    if nat is not None and declared and not nat.exists():
        raise ModelError(f"{nat}: model file is missing ({mpath.name} names it)")
    return True


def gate_failed(meta: Mapping[str, Any]) -> bool:
    """True when the metadata records a failed deploy gate (issue 11 §2). A model trained before
    the gate existed has no verdict; it is not treated as failed."""
    return str(meta.get("gate", "")).lower() == "fail"


# --------------------------------------------------------------------------- saving


def check_onnx(onnx_bytes: bytes, backend: str) -> None:
    """``ModelError`` unless the bytes pass the ONNX checker (a model the filter could load)."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(onnx_bytes))
    except Exception as exc:  # protobuf DecodeError / ValidationError
        raise ModelError(
            f"refusing to save a corrupt {backend} ONNX model: {str(exc).splitlines()[0]}"
        ) from None


def save_model(
    model_dir: Path,
    backend: str,
    onnx_bytes: bytes,
    metadata: Mapping[str, Any],
    *,
    native_text: str | None = None,
) -> dict[str, Any]:
    """Atomically save one backend's model (metadata → native → ONNX); return the metadata written.

    The metadata gains ``backend``, ``onnx_sha256`` (the binding readers verify), file names and
    defaults for the schema fields and library versions. The ONNX is checked by the ONNX checker
    and the schema hash against the code before anything is written: a model the filter would
    refuse is never saved. Previous files are kept as ``*_prev.*``. A LightGBM save without
    ``native_text`` removes a stale ``lgbm_filter.txt`` (kept as its backup) so that no text file
    describes a different model than the ONNX.
    """
    _check_backend(backend)
    folder = Path(model_dir)
    check_onnx(onnx_bytes, backend)
    if native_text is not None and backend not in NATIVE_FILES:
        raise ModelError(f"backend {backend!r} has no native model file")

    meta: dict[str, Any] = {k: v for k, v in dict(metadata).items() if k not in _DERIVED}
    meta.setdefault("feature_schema_hash", feature_schema_hash())
    meta.setdefault("feature_schema_version", FEATURE_SCHEMA_VERSION)
    meta.setdefault("feature_names", list(FEATURE_COLS))
    meta.setdefault("library_versions", library_versions())
    meta.setdefault("created_at", datetime.now(UTC).isoformat())
    check_schema(meta, source=f"{backend} model for {folder}")
    opath = onnx_path(folder, backend)
    nat = native_path(folder, backend)
    native_bytes = None if native_text is None else native_text.encode("utf-8")
    meta.update(
        backend=backend,
        metadata_format=METADATA_FORMAT,
        onnx_file=opath.name,
        onnx_sha256=sha256_bytes(onnx_bytes),
        native_file=nat.name if (nat is not None and native_bytes is not None) else None,
        native_sha256=None if native_bytes is None else sha256_bytes(native_bytes),
    )
    writes: list[tuple[Path, bytes]] = [(metadata_path(folder, backend), json_bytes(meta))]
    removes: list[Path] = []
    if nat is not None:
        if native_bytes is not None:
            writes.append((nat, native_bytes))
        elif nat.exists():
            removes.append(nat)
    writes.append((opath, onnx_bytes))  # last: the commit point (module docstring)
    replace_files(folder, writes, removes)
    return jsonable(meta)


def retire_model(model_dir: Path, backend: str) -> bool:
    """Remove one backend (ONNX first, so the filter stops seeing it), keeping ``*_prev`` copies."""
    files = [f for f in reversed(model_files(Path(model_dir), backend)) if f.exists()]
    if not files:
        return False
    replace_files(Path(model_dir), [], files)
    return True
