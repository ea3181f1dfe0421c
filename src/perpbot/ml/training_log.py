"""The append-only training log (``training_log.json``) and the side files beside the models.

Separate from ``artifacts.py`` because the log is a history, not a model: it is appended to under
a lock (read-modify-write between processes), never rewritten, and an unreadable log is an error
rather than something to overwrite; side files (``active_lgbm_params.json``) are replaced with the
same backups as the model files.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from perpbot.errors import ModelError
from perpbot.fileio import jsonable
from perpbot.ml.artifacts import TRAINING_LOG, json_bytes
from perpbot.ml.atomic_files import ensure_folder, replace_files, unwritable, write_temp


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Serialise read-modify-write of the training log between processes.

    A POSIX advisory lock on the folder itself (no lock file left behind); where directories
    cannot be locked the append simply runs unlocked (the write itself is still atomic).
    """
    ensure_folder(folder)
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):  # pragma: no cover - non-POSIX
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_training_log(model_dir: Path) -> list[Any]:
    """The list of logged runs (empty when the file does not exist)."""
    path = Path(model_dir) / TRAINING_LOG
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_bytes())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"{path}: training log is unreadable ({exc}); fix or move it, nothing was appended"
        ) from None
    if not isinstance(entries, list):
        raise ModelError(f"{path}: training log must be a JSON list; fix or move it, nothing was appended")
    return entries


def append_training_log(model_dir: Path, entry: Mapping[str, Any]) -> None:
    """Append one entry (never rewrite history; an unreadable log is an error, not overwritten)."""
    append_training_entries(
        model_dir, [{"logged_at": datetime.now(UTC).isoformat(), **jsonable(dict(entry))}]
    )


def append_training_entries(model_dir: Path, new: Sequence[Mapping[str, Any]]) -> None:
    """Append entries as they are (deploy copies staged entries with their own ``logged_at``)."""
    folder = Path(model_dir)
    with _locked(folder):
        entries = read_training_log(folder) + [jsonable(dict(e)) for e in new]
        path = folder / TRAINING_LOG
        try:
            tmp = write_temp(folder, path.name, json_bytes(entries))
            os.replace(tmp, path)
        except OSError as exc:
            raise unwritable(folder, exc) from None


def replace_sidecar(model_dir: Path, name: str, data: bytes) -> None:
    """Atomically replace one side file (e.g. ``active_lgbm_params.json``), keeping ``*_prev``."""
    replace_files(Path(model_dir), [(Path(model_dir) / name, data)])
