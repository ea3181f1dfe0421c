"""The one atomic-write helper behind data files, feature matrices, model files and reports."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from perpbot.fileio import (
    UnwritableFolderError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    stage_bytes,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_create_folders_share_the_file_and_leave_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "report.json"
    atomic_write_text(target, "{}\n")
    assert target.read_text() == "{}\n" and _mode(target) == 0o644
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_a_failing_writer_keeps_the_previous_file_and_removes_its_temp(tmp_path: Path) -> None:
    target = tmp_path / "m.parquet"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"PAR1 half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full") as info:
        atomic_write(target, half_then_fail)
    assert not isinstance(info.value, UnwritableFolderError)  # a write error is not a folder error
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]


def test_an_unusable_folder_is_reported_before_anything_is_written(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UnwritableFolderError) as info:
        atomic_write_bytes(blocker / "sub" / "x.bin", b"data")
    assert info.value.strerror
    with pytest.raises(UnwritableFolderError):
        stage_bytes(blocker, "x.bin", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_staged_files_get_the_requested_mode_and_stay_next_to_the_target(tmp_path: Path) -> None:
    tmp = stage_bytes(tmp_path, "lgbm_filter.onnx", b"\x08\x01", mode=0o640)
    assert tmp.parent == tmp_path and tmp.name.startswith(".lgbm_filter.onnx.") and tmp.suffix == ".tmp"
    assert tmp.read_bytes() == b"\x08\x01" and _mode(tmp) == 0o640
