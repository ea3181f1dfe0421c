"""Replacing several files as one change: staged, fsync'ed, renamed in order, with ``*_prev``
backups, and rolled back from those backups when a rename fails.

Each file is written to a temporary file in the same folder, flushed and fsync'ed, and only then
``os.replace``-d over the target (atomic on POSIX). All temporary files — new content and backup
copies — are staged *before* the first rename, so a failure while writing (disk full, permission,
a crash) leaves the old files untouched; a failure between renames restores the files already
replaced from the backups.

Separate from ``artifacts.py`` (which decides *what* a model's files are and in which order they
must appear, see its docstring) because this is file-system machinery with failure paths of its
own, shared by model saves, retirements and the side files (``training_log.py``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from perpbot.errors import ModelError
from perpbot.fileio import stage_bytes


def backup_path(path: Path) -> Path:
    """``lgbm_filter.onnx`` → ``lgbm_filter_prev.onnx``."""
    return path.with_name(f"{path.stem}_prev{path.suffix}")


def unwritable(folder: Path, exc: OSError) -> ModelError:
    reason = exc.strerror or type(exc).__name__
    return ModelError(f"models folder {folder} is not writable: {reason}")


def ensure_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unwritable(folder, exc) from None
    if not folder.is_dir():
        raise ModelError(f"models folder {folder} is not a directory")


def _file_mode(path: Path) -> int:
    """Permissions for a new version of ``path``: the current file's, else rw-r--r--.

    ``mkstemp`` creates 0600 files; without this a bot running as another user than the trainer
    could no longer read a freshly deployed model.
    """
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o644


def write_temp(folder: Path, target_name: str, data: bytes) -> Path:
    """Stage ``data`` in a fsync'ed temporary file next to the target (keeping the target's mode)."""
    return stage_bytes(folder, target_name, data, _file_mode(folder / target_name))


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_files(folder: Path, writes: Sequence[tuple[Path, bytes]], removes: Sequence[Path] = ()) -> None:
    """Replace ``writes`` (in order) and delete ``removes``, keeping ``*_prev`` backups.

    Stage: every new content and every backup copy goes to a temporary file first (old files
    untouched if anything fails). Commit: backups renamed into place, then the targets in the
    given order, then removals. A failure during commit restores the targets from the backups.
    """
    ensure_folder(folder)
    staged: list[Path] = []
    new_tmp: list[tuple[Path, Path]] = []
    backups: list[tuple[Path, Path]] = []
    try:
        for target, data in writes:
            new_tmp.append((write_temp(folder, target.name, data), target))
            staged.append(new_tmp[-1][0])
        for target in [t for t, _ in writes] + list(removes):
            if target.exists():
                backups.append((write_temp(folder, backup_path(target).name, target.read_bytes()), target))
                staged.append(backups[-1][0])
    except OSError as exc:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        raise unwritable(folder, exc) from None

    existed = {t for _, t in backups}
    done: list[Path] = []
    try:
        for tmp, target in backups:
            os.replace(tmp, backup_path(target))
        for tmp, target in new_tmp:
            os.replace(tmp, target)
            done.append(target)
        for target in removes:
            target.unlink(missing_ok=True)
            done.append(target)
    except OSError as exc:
        # Targets are only touched after every backup is in place, so each one in ``done`` can be
        # restored from its backup (or removed, when it did not exist before).
        for target in reversed(done):
            with contextlib.suppress(OSError):
                if target in existed:
                    os.replace(write_temp(folder, target.name, backup_path(target).read_bytes()), target)
                else:
                    target.unlink(missing_ok=True)
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        raise ModelError(
            f"saving model files in {folder} failed ({exc.strerror or exc}); previous files kept"
        ) from None
    _fsync_dir(folder)
