"""The training log: append-only, and an unreadable log is an error, never overwritten."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perpbot.errors import ModelError
from perpbot.ml.training_log import append_training_log, read_training_log


def test_training_log_is_append_only(tmp_path: Path) -> None:
    append_training_log(tmp_path, {"backend": "lgbm", "auc": np.float64(0.6)})
    append_training_log(tmp_path, {"backend": "nn", "auc": float("nan")})
    entries = read_training_log(tmp_path)
    assert [e["backend"] for e in entries] == ["lgbm", "nn"]
    assert entries[0]["auc"] == 0.6 and entries[1]["auc"] is None and "logged_at" in entries[0]
    assert [p.name for p in tmp_path.iterdir()] == ["training_log.json"]  # no lock or temp files left


def test_unreadable_training_log_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "training_log.json").write_text("{broken")
    with pytest.raises(ModelError, match="nothing was appended"):
        append_training_log(tmp_path, {"backend": "lgbm"})
    assert (tmp_path / "training_log.json").read_text() == "{broken"
