"""Atomic file writes: the one implementation behind every file perpbot writes.

Why: a reader (a running bot, a second tool, a user opening a report) must never see a
half-written file, and an interrupted write (Ctrl-C, a full disk, a crash) must leave the previous
file intact. Each write therefore goes to a temporary file *in the target's folder* (so the final
``os.replace`` stays on one file system and is atomic on POSIX), is flushed and fsync'ed, gets its
final permissions, and only then replaces the target. On any failure the temporary file is
removed and the error propagates unchanged. A folder that cannot be created or written into is
reported as :class:`UnwritableFolderError` (an ``OSError``) before anything is written, so callers
can turn exactly that case into their own one-line user error.

Permissions default to rw-r--r--: ``mkstemp`` creates 0600 files, and data, models and reports are
meant to be read by other users (a bot running under another account than the trainer).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_MODE = 0o644


class UnwritableFolderError(OSError):
    """The target folder cannot be created or holds no new file; nothing was written."""


def _unwritable(exc: OSError, folder: Path) -> UnwritableFolderError:
    return UnwritableFolderError(exc.errno, exc.strerror or str(exc), str(folder))


def stage_file(
    folder: Path, target_name: str, write: Callable[[Path], None], mode: int = DEFAULT_MODE
) -> Path:
    """Write a temporary file next to ``folder/target_name`` with ``write(tmp_path)``; return it.

    The file is fsync'ed and has ``mode`` when this returns; the caller renames it into place
    (callers that replace several files stage them all first, then rename). The temporary file is
    removed if anything fails.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target_name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise _unwritable(exc, folder) from exc
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:  # writers that take a path (parquet) do not fsync themselves
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def stage_bytes(folder: Path, target_name: str, data: bytes, mode: int = DEFAULT_MODE) -> Path:
    """:func:`stage_file` for a bytes payload."""
    return stage_file(folder, target_name, lambda tmp: tmp.write_bytes(data), mode)


def atomic_write(path: Path, write: Callable[[Path], None], mode: int = DEFAULT_MODE) -> Path:
    """Create the parent folders, stage the new content with ``write(tmp_path)``, then
    ``os.replace`` it over ``path``. For writers that want a path (parquet, images)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(exc, path.parent) from exc
    tmp = stage_file(path.parent, path.name, write, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes, mode: int = DEFAULT_MODE) -> Path:
    """Atomically replace ``path`` with ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), mode)


def atomic_write_text(path: Path, text: str, mode: int = DEFAULT_MODE) -> Path:
    """Atomically replace ``path`` with ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def check_writable_folder(folder: Path) -> None:
    """Raise :class:`UnwritableFolderError` unless ``folder`` is (or can become) a writable folder.

    Checked before any computing, so a bad ``--out`` costs the user one line instead of a run.
    Nothing is created: the probe is a temporary folder inside the nearest existing ancestor,
    removed at once (an immutable or read-only folder fails it even where ``os.access`` says yes).
    An existing non-folder anywhere on the path is refused by name.
    """
    folder = Path(folder)
    probe_in = folder
    while not probe_in.exists():
        if probe_in.is_symlink():  # a dangling link: mkdir would fail later
            raise UnwritableFolderError(20, "a dangling symbolic link", str(probe_in))
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        raise UnwritableFolderError(20, "an existing file, not a folder", str(probe_in))
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".perpbot-probe.", dir=probe_in))
    except OSError as exc:
        raise _unwritable(exc, probe_in) from exc


def _move_into(staged: Path, target: Path) -> None:
    """Replace each top-level entry of ``target`` that ``staged`` also holds; keep the others.

    Entries the new run did not produce (a user's own notes, another command's sub-folder) stay;
    the replaced ones are first moved aside into one trash folder, then deleted once every new
    entry is in place, so an interruption leaves either the old or the new entry, never neither.
    """
    target.mkdir(parents=True, exist_ok=True)
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    try:
        for entry in sorted(staged.iterdir()):
            dest = target / entry.name
            if dest.exists() or dest.is_symlink():
                os.replace(dest, trash / entry.name)
            os.replace(entry, dest)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``target``; move its contents into ``target`` only
    when the block succeeds.

    Why: a run that fails half-way (bad data, Ctrl-C, a bug) must leave the previous run's files
    intact and no empty folders behind. Every command that writes a folder of results (backtest,
    walk-forward, demo) writes into the staged folder and lets this move it into place. Parent
    folders created for the stage are removed again when the block fails.
    """
    target = Path(target)
    check_writable_folder(target)
    created: list[Path] = []
    parent = target.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.new.", dir=target.parent))
    except OSError as exc:
        raise _unwritable(exc, target.parent) from exc
    try:
        yield staged
        _move_into(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(staged, ignore_errors=True)


def relocate(path: Path, staged: Path, target: Path) -> Path:
    """Where ``path`` (inside ``staged``) lives once :func:`staged_folder` has moved it."""
    try:
        return Path(target) / Path(path).relative_to(staged)
    except ValueError:
        return Path(path)


def jsonable(value: Any) -> Any:
    """Strict-JSON version of ``value`` for every JSON file perpbot writes (model metadata,
    reports): numpy scalars/arrays unwrapped, NaN/±inf → null (``allow_nan=False`` then holds),
    paths as text, datetimes as UTC ISO-8601 (naive ones taken as UTC)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    # numpy is looked up, not imported: a numpy value implies numpy is loaded, and commands that
    # never touch numpy (``perpbot --help``) must not pay its import (issue 13, imports).
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if np is not None and isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        return aware.astimezone(UTC).isoformat()
    return value
