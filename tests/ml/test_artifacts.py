"""Model files: round trip, backups, atomicity, unwritable folder, schema refusal."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from perpbot.errors import ModelError
from perpbot.ml import artifacts, atomic_files
from perpbot.ml.artifacts import (
    build_metadata,
    check_schema,
    load_metadata,
    read_model,
    save_model,
)
from perpbot.ml.atomic_files import backup_path
from perpbot.ml.features import FEATURE_COLS, feature_schema_hash

N_FEAT = len(FEATURE_COLS)


def const_model(p: float) -> bytes:
    """A valid filter-shaped ONNX (X float32 [N, 26] → proba [N]) returning ``p`` for every row."""
    nodes = [
        helper.make_node("ReduceSum", ["X", "axes"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "zero"], ["z"]),
        helper.make_node("Add", ["z", "p"], ["proba"]),
    ]
    graph = helper.make_graph(
        nodes,
        "const",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", N_FEAT])],
        [helper.make_tensor_value_info("proba", TensorProto.FLOAT, ["N"])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("p", TensorProto.FLOAT, [], [p]),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def meta(backend: str = "lgbm", **extra: object) -> dict:
    return build_metadata(
        backend,
        params={"n_estimators": 10},
        n_samples=123,
        train_start=1_700_000_000_000,
        train_end="2024-01-02T03:04:05",
        data_sha256="ab" * 32,
        wf_metrics={"auc_mean": 0.61, "auc_std": float("nan")},
        operating_threshold=0.58,
        symbol="XRPUSDT",
        extra=extra or None,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --------------------------------------------------------------------------- round trip


def test_save_and_read_round_trip(tmp_path: Path) -> None:
    d = tmp_path / "xrpusdt"
    written = save_model(d, "lgbm", const_model(0.3), meta(), native_text="tree\nfake native\n")
    assert sorted(p.name for p in d.iterdir()) == ["lgbm_filter.json", "lgbm_filter.onnx", "lgbm_filter.txt"]
    files = read_model(d, "lgbm", with_native=True)
    assert files is not None
    assert files.onnx_bytes == const_model(0.3)
    assert files.native_text == "tree\nfake native\n"
    m = load_metadata(d / "lgbm_filter.json")
    assert m == written
    assert (
        m["backend"] == "lgbm"
        and m["onnx_file"] == "lgbm_filter.onnx"
        and m["native_file"] == "lgbm_filter.txt"
    )
    assert m["onnx_sha256"] == artifacts.sha256_bytes(const_model(0.3))
    assert m["feature_schema_hash"] == feature_schema_hash()
    assert m["feature_names"] == list(FEATURE_COLS)
    assert m["training_window"] == {"start": "2023-11-14T22:13:20+00:00", "end": "2024-01-02T03:04:05+00:00"}
    assert m["walk_forward"] == {"auc_mean": 0.61, "auc_std": None}  # strict JSON: NaN -> null
    assert m["operating_threshold"] == 0.58 and m["n_samples"] == 123 and m["data_sha256"] == "ab" * 32
    assert {"lightgbm", "onnx", "onnxruntime", "torch", "numpy", "perpbot"} <= set(m["library_versions"])
    assert m["created_at"].endswith("+00:00")
    json.loads((d / "lgbm_filter.json").read_text())  # plain JSON, no pickle anywhere


def test_saved_files_are_readable_by_other_users(tmp_path: Path) -> None:
    save_model(tmp_path, "nn", const_model(0.3), meta("nn"))
    assert (tmp_path / "nn_filter.onnx").stat().st_mode & 0o777 == 0o644
    (tmp_path / "nn_filter.onnx").chmod(0o640)  # an operator's choice is kept on replacement
    save_model(tmp_path, "nn", const_model(0.4), meta("nn"))
    assert (tmp_path / "nn_filter.onnx").stat().st_mode & 0o777 == 0o640


def test_missing_model_is_none_not_an_error(tmp_path: Path) -> None:
    assert read_model(tmp_path, "nn") is None


def test_previous_version_is_kept_as_backup(tmp_path: Path) -> None:
    save_model(tmp_path, "lgbm", const_model(0.3), meta(), native_text="tree v1\n")
    first = snapshot(tmp_path)
    save_model(tmp_path, "lgbm", const_model(0.7), meta(), native_text="tree v2\n")
    for name in ("lgbm_filter.onnx", "lgbm_filter.json", "lgbm_filter.txt"):
        assert (tmp_path / backup_path(Path(name)).name).read_bytes() == first[name]
    assert (tmp_path / "lgbm_filter_prev.onnx").exists()
    assert read_model(tmp_path, "lgbm").onnx_bytes == const_model(0.7)  # type: ignore[union-attr]


def test_a_save_without_native_text_retires_the_stale_text_file(tmp_path: Path) -> None:
    save_model(tmp_path, "lgbm", const_model(0.3), meta(), native_text="tree v1\n")
    save_model(tmp_path, "lgbm", const_model(0.4), meta())
    assert not (tmp_path / "lgbm_filter.txt").exists()
    assert (tmp_path / "lgbm_filter_prev.txt").read_text() == "tree v1\n"


# --------------------------------------------------------------------------- atomicity


def test_failure_between_renames_leaves_the_old_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_model(tmp_path, "lgbm", const_model(0.3), meta(), native_text="tree v1\n")
    before = snapshot(tmp_path)
    real_replace = os.replace

    def failing_replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "lgbm_filter.onnx":  # metadata and text already replaced by now
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_files.os, "replace", failing_replace)
    with pytest.raises(ModelError, match="previous files kept"):
        save_model(tmp_path, "lgbm", const_model(0.9), meta(), native_text="tree v2\n")
    monkeypatch.undo()
    after = snapshot(tmp_path)
    for name in ("lgbm_filter.onnx", "lgbm_filter.json", "lgbm_filter.txt"):
        assert after[name] == before[name], name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert read_model(tmp_path, "lgbm") is not None  # still a consistent, loadable pair


def test_failure_while_writing_leaves_the_old_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_model(tmp_path, "nn", const_model(0.3), meta("nn"))
    before = snapshot(tmp_path)
    real_write = atomic_files.write_temp
    calls = {"n": 0}

    def flaky(folder: Path, name: str, data: bytes) -> Path:
        calls["n"] += 1
        if calls["n"] == 2:  # the ONNX payload
            raise OSError(5, "Input/output error")
        return real_write(folder, name, data)

    monkeypatch.setattr(atomic_files, "write_temp", flaky)
    with pytest.raises(ModelError, match=re.escape(str(tmp_path))):
        save_model(tmp_path, "nn", const_model(0.9), meta("nn"))
    assert snapshot(tmp_path) == before  # no temp files, no backups touched, nothing replaced


def test_first_save_failure_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def failing_replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == "nn_filter.onnx":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_files.os, "replace", failing_replace)
    with pytest.raises(ModelError):
        save_model(tmp_path / "new", "nn", const_model(0.9), meta("nn"))
    assert list((tmp_path / "new").iterdir()) == []  # the metadata written first was removed again


def test_unwritable_folder_is_a_one_line_model_error(tmp_path: Path) -> None:
    blocker = tmp_path / "models"
    blocker.write_text("a file where the models folder should be")
    with pytest.raises(ModelError) as err:
        save_model(blocker / "xrpusdt", "lgbm", const_model(0.3), meta())
    msg = str(err.value)
    assert "\n" not in msg and str(blocker / "xrpusdt") in msg and "not writable" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_is_a_model_error(tmp_path: Path) -> None:  # pragma: no cover - non-root runs
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ModelError, match="not writable"):
            save_model(tmp_path, "lgbm", const_model(0.3), meta())
    finally:
        tmp_path.chmod(0o700)


def test_corrupt_onnx_is_never_saved(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="corrupt"):
        save_model(tmp_path, "lgbm", b"\x00garbage", meta())
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- metadata and schema


def test_schema_mismatch_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    bad = {**meta(), "feature_schema_hash": "0123456789abcdef" * 4}
    with pytest.raises(ModelError, match=r"trained for feature schema 0123456789ab, code has [0-9a-f]{12}"):
        check_schema(bad)
    with pytest.raises(ModelError, match="trained for feature schema"):
        save_model(tmp_path, "lgbm", const_model(0.3), bad)
    # A model saved by older code and read by newer code:
    save_model(tmp_path, "lgbm", const_model(0.3), meta())
    path = tmp_path / "lgbm_filter.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "feature_schema_hash": "f" * 64}))
    with pytest.raises(
        ModelError, match=r"lgbm_filter.onnx: model was trained for feature schema ffffffffffff"
    ):
        read_model(tmp_path, "lgbm")
    with pytest.raises(ModelError, match="no feature_schema_hash"):
        check_schema({})


def test_onnx_that_does_not_match_its_metadata_is_refused(tmp_path: Path) -> None:
    save_model(tmp_path, "nn", const_model(0.3), meta("nn"))
    (tmp_path / "nn_filter.onnx").write_bytes(const_model(0.8))  # hand-copied ONNX, old metadata
    with pytest.raises(ModelError, match="sha256 differs"):
        read_model(tmp_path, "nn")


def test_load_metadata_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nn_filter\.json: model metadata file is missing"):
        load_metadata(tmp_path / "nn_filter.json")
    (tmp_path / "nn_filter.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_metadata(tmp_path / "nn_filter.json")
    (tmp_path / "nn_filter.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="JSON object"):
        load_metadata(tmp_path / "nn_filter.json")


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model backend"):
        save_model(tmp_path, "mlx", const_model(0.3), meta())


def test_jsonable_unwraps_numpy() -> None:
    out = artifacts.jsonable({"a": np.float32(0.5), "b": np.arange(3), "c": (np.inf, 1)})
    assert out == {"a": 0.5, "b": [0, 1, 2], "c": [None, 1]}
    json.dumps(out, allow_nan=False)


def test_saved_onnx_is_loadable(tmp_path: Path) -> None:
    save_model(tmp_path, "nn", const_model(0.25), meta("nn"))
    onnx.checker.check_model(onnx.load(str(tmp_path / "nn_filter.onnx")))
