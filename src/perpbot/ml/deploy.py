"""Deployment of staged models into the live models folder (``perpbot deploy``).

Why plan, then apply: ``deploy --all`` used to deploy some symbols and then fail on the others.
:func:`plan_deploy` verifies one symbol completely — every staged file (ONNX checker, sha256
binding, LightGBM text, feature schema), the gate verdict, the destination's training log — and
writes nothing; :func:`deploy_all` plans *every* symbol before it applies any, and restores the
symbols already applied if a write fails later (a full disk), so the result is all or none.

What a deploy touches: only the backends the staging folder holds (deploying LightGBM never moves
the neural model to ``*_prev``), the tuned parameters when they differ, and the training log,
which is appended to (entries the destination already has are not repeated), never replaced. A
backend identical byte for byte is not rewritten, and a symbol with nothing new is a no-op.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perpbot.data.schema import model_dir as symbol_model_dir
from perpbot.errors import ModelError
from perpbot.fileio import jsonable, stage_bytes
from perpbot.ml.artifacts import (
    BACKENDS,
    ONNX_FILES,
    SIDECAR_FILES,
    ModelFiles,
    check_onnx,
    gate_failed,
    model_files,
    onnx_path,
    read_model,
    save_model,
    verify_model_files,
)
from perpbot.ml.atomic_files import backup_path
from perpbot.ml.training_log import append_training_entries, read_training_log, replace_sidecar

PARAMS_FILE = "active_lgbm_params.json"


@dataclass(frozen=True)
class DeployPlan:
    """What deploying one symbol will do, computed and verified before anything is written."""

    symbol: str
    src: Path
    dst: Path
    changed: tuple[ModelFiles, ...]  # backends whose files will be replaced
    identical: tuple[str, ...]  # backends already deployed byte for byte
    kept: tuple[str, ...]  # destination backends the source does not have: left untouched
    params: bytes | None  # active_lgbm_params.json to install (None: unchanged)
    log_entries: tuple[dict[str, Any], ...]  # staging log entries the destination lacks

    @property
    def backends(self) -> list[str]:
        return [f.backend for f in self.changed] + list(self.identical)

    @property
    def no_op(self) -> bool:
        return not (self.changed or self.params is not None or self.log_entries)

    def touched_files(self) -> list[Path]:
        """Every destination file applying the plan may create or replace (for a rollback)."""
        out: list[Path] = []
        for f in self.changed:
            for path in model_files(self.dst, f.backend):
                out += [path, backup_path(path)]
        for name in SIDECAR_FILES:
            out += [self.dst / name, backup_path(self.dst / name)]
        return out


def _same(a: ModelFiles, b: ModelFiles) -> bool:
    return a.onnx_bytes == b.onnx_bytes and a.native_text == b.native_text and a.metadata == b.metadata


def _entry_key(entry: Any) -> str:
    return json.dumps(jsonable(entry), sort_keys=True)


def plan_deploy(src_dir: Path, dst_dir: Path, symbol: str, *, force: bool = False) -> DeployPlan:
    """Verify one symbol's staged models and work out what a deploy changes; writes nothing.

    Refused (``ModelError`` naming the file or the reason): no model in the source, a source file
    that does not verify, a destination training log that is unreadable, or a model whose gate
    verdict is ``fail`` unless ``force``.
    """
    src = symbol_model_dir(Path(src_dir), symbol)
    dst = symbol_model_dir(Path(dst_dir), symbol)
    if src.resolve() == dst.resolve():
        raise ModelError(f"deploy source and destination are the same folder: {src}")
    for backend in BACKENDS:
        verify_model_files(src, backend)
    found = [files for b in BACKENDS if (files := read_model(src, b, with_native=True)) is not None]
    if not found:
        raise ModelError(f"nothing to deploy: {src} has no {' or '.join(ONNX_FILES.values())}")
    for files in found:
        try:
            check_onnx(files.onnx_bytes, files.backend)
        except ModelError as exc:
            raise ModelError(f"{files.onnx_path}: {exc}") from None
        if gate_failed(files.metadata) and not force:
            reason = files.metadata.get("gate_reason") or "no reason recorded"
            raise ModelError(
                f"{symbol}: the {files.backend} model in {src} failed the deploy gate ({reason}); "
                "pass --force to deploy it anyway"
            )
    changed: list[ModelFiles] = []
    identical: list[str] = []
    for files in found:
        try:
            current = read_model(dst, files.backend, with_native=True)
        except ModelError:
            current = None  # a broken destination model is simply replaced
        if current is not None and _same(current, files):
            identical.append(files.backend)
        else:
            changed.append(files)
    kept = tuple(b for b in BACKENDS if b not in [f.backend for f in found] and onnx_path(dst, b).exists())
    params_src = src / PARAMS_FILE
    params = params_src.read_bytes() if params_src.is_file() else None
    params_dst = dst / PARAMS_FILE
    if params is not None and params_dst.is_file() and params_dst.read_bytes() == params:
        params = None
    have = {_entry_key(e) for e in read_training_log(dst)}
    new_entries = tuple(e for e in read_training_log(src) if _entry_key(e) not in have)
    return DeployPlan(symbol, src, dst, tuple(changed), tuple(identical), kept, params, new_entries)


def apply_deploy(plan: DeployPlan) -> None:
    """Write one verified plan: each changed backend through :func:`save_model` (backups of *its
    own* files, ONNX last), the tuned parameters, and the new log entries appended."""
    for files in plan.changed:
        save_model(plan.dst, files.backend, files.onnx_bytes, files.metadata, native_text=files.native_text)
    if plan.params is not None:
        replace_sidecar(plan.dst, PARAMS_FILE, plan.params)
    if plan.log_entries:
        append_training_entries(plan.dst, plan.log_entries)


def _snapshot(paths: Sequence[Path]) -> dict[Path, bytes | None]:
    return {p: (p.read_bytes() if p.is_file() else None) for p in paths}


def _restore(snapshot: Mapping[Path, bytes | None]) -> None:
    """Put files back as they were (ONNX last, so a reader never pairs new metadata with it)."""
    for path in sorted(snapshot, key=lambda p: p.suffix == ".onnx"):
        data = snapshot[path]
        with contextlib.suppress(OSError):
            if data is None:
                path.unlink(missing_ok=True)
            else:
                os.replace(stage_bytes(path.parent, path.name, data), path)


def deploy_all(
    src_dir: Path, dst_dir: Path, symbols: Sequence[str], *, force: bool = False
) -> list[DeployPlan]:
    """Deploy several symbols all or none: every symbol is verified first (nothing is written if
    one fails), then each is applied; a write failure restores the symbols already applied."""
    plans = [plan_deploy(src_dir, dst_dir, s, force=force) for s in symbols]
    done: list[dict[Path, bytes | None]] = []
    for plan in plans:
        if plan.no_op:
            continue
        snap = _snapshot(plan.touched_files())
        try:
            apply_deploy(plan)
        except (ModelError, OSError) as exc:
            _restore(snap)
            for earlier in reversed(done):
                _restore(earlier)
            raise ModelError(
                f"deploy of {plan.symbol} failed ({exc}); every symbol was restored, nothing deployed"
            ) from None
        done.append(snap)
    return plans


def deploy(src_dir: Path, dst_dir: Path, symbol: str, *, force: bool = False) -> list[str]:
    """Deploy one symbol (:func:`deploy_all`); returns the backends now deployed from the source.

    ``src_dir`` and ``dst_dir`` are models *roots* (like ``--model-dir``). A destination backend
    the source does not have is left untouched (deploying LightGBM never moves the neural model to
    ``*_prev``); the training log is append-only; an identical model is not rewritten.
    """
    return deploy_all(src_dir, dst_dir, [symbol], force=force)[0].backends
