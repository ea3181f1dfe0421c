"""Issue 11 §1 through ``perpbot backtest``: no silent or destructive failure.

ML on without a loadable model is an error naming the file; a failed run leaves the previous run
intact and no empty folders; an unusable ``--out`` or a too-large ``--walk-forward`` is refused
before any computing; ``--no-ml`` with ``--walk-forward`` is refused; every symbol option works;
estimated exchange filters and the ML filter's decisions are reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from perpbot.cli.main import app
from perpbot.data.schema import data_path
from perpbot.data.store import save_market
from perpbot.data.synth import synth_market
from tests.backtest.conftest import tiny_onnx_model

runner = CliRunner()
WINDOW = ("--from", "2025-01-05", "--to", "2025-01-20")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SYMBOLS", "SYMBOL", "NO_ML_FILTER", "ML_BACKENDS", "ML_THRESHOLD", "ML_THRESHOLD_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ML_BACKENDS", "lgbm")


def backtest(data_dir: Path, out: Path, *args: str) -> Result:
    return runner.invoke(app, ["backtest", "--data-dir", str(data_dir), "--out", str(out), "--quiet", *args])


def one_error(res: Result, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in res.output
    return err


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    tiny_onnx_model(root / "xrpusdt")
    return root


# --------------------------------------------------------------------------- ML on, no loadable model


def test_ml_on_without_any_model_is_an_error(synth_data_dir: Path, tmp_path: Path) -> None:
    res = backtest(synth_data_dir, tmp_path / "o", "--symbol", "XRPUSDT", "--model-dir", str(tmp_path / "m"))
    one_error(res, "XRPUSDT", "lgbm_filter.onnx", "--no-ml")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("delete_onnx", "lgbm_filter.onnx: model file is missing"),
        ("truncate_onnx", "lgbm_filter.onnx"),
        ("corrupt_json", "lgbm_filter.json: model metadata is not valid JSON"),
        ("delete_json", "lgbm_filter.json: model metadata file is missing"),
        ("schema_mismatch", "feature schema"),
        ("truncate_txt", "lgbm_filter.txt"),
    ],
)
def test_ml_on_with_a_damaged_model_names_the_file(
    synth_data_dir: Path, tmp_path: Path, models: Path, damage: str, needle: str
) -> None:
    folder = models / "xrpusdt"
    if damage == "truncate_txt":  # a model saved with its LightGBM text, then the text cut short
        meta = json.loads((folder / "lgbm_filter.json").read_text())
        from perpbot.ml import artifacts

        onnx_bytes = (folder / "lgbm_filter.onnx").read_bytes()
        artifacts.save_model(folder, "lgbm", onnx_bytes, meta, native_text="tree\n" * 50)
        (folder / "lgbm_filter.txt").write_text("tree\n" * 10)
    elif damage == "delete_onnx":
        (folder / "lgbm_filter.onnx").unlink()
    elif damage == "truncate_onnx":
        data = (folder / "lgbm_filter.onnx").read_bytes()
        (folder / "lgbm_filter.onnx").write_bytes(data[: len(data) // 2])
    elif damage == "corrupt_json":
        (folder / "lgbm_filter.json").write_text("{not json")
    elif damage == "delete_json":
        (folder / "lgbm_filter.json").unlink()
    elif damage == "schema_mismatch":
        meta = json.loads((folder / "lgbm_filter.json").read_text())
        meta["feature_schema_hash"] = "0" * 64
        (folder / "lgbm_filter.json").write_text(json.dumps(meta))
    res = backtest(synth_data_dir, tmp_path / "o", "--symbol", "XRPUSDT", "--model-dir", str(models), *WINDOW)
    one_error(res, needle)


def test_ml_on_reports_signals_seen_accepted_rejected_and_threshold_source(
    synth_data_dir: Path, tmp_path: Path, models: Path
) -> None:
    out = tmp_path / "o"
    res = backtest(synth_data_dir, out, "--symbol", "XRPUSDT", "--model-dir", str(models), *WINDOW)
    assert res.exit_code == 0, res.output
    line = next(x for x in res.stdout.splitlines() if x.startswith("XRPUSDT: ML filter lgbm"))
    # The tiny model stores no operating threshold: the served one is ML_THRESHOLD, and it says so.
    assert "threshold 0.550 (from the config)" in line
    doc = json.loads((out / "metrics.json").read_text())
    status = doc["parameters"]["ml_filters"]["XRPUSDT"]
    assert status["signals_seen"] == status["signals_accepted"] + status["signals_rejected"] > 0
    assert f"{status['signals_seen']} signals seen" in line


def test_a_gate_failed_model_runs_without_the_filter_and_says_why(
    synth_data_dir: Path, tmp_path: Path, models: Path
) -> None:
    from perpbot.ml import artifacts

    folder = models / "xrpusdt"
    meta = json.loads((folder / "lgbm_filter.json").read_text())
    meta.update(gate="fail", gate_reason="AUC 0.48 does not exceed 0.5")
    artifacts.save_model(folder, "lgbm", (folder / "lgbm_filter.onnx").read_bytes(), meta)
    res = backtest(synth_data_dir, tmp_path / "o", "--symbol", "XRPUSDT", "--model-dir", str(models), *WINDOW)
    assert res.exit_code == 0, res.output
    assert "ML filter not used" in res.stdout and "failed the deploy gate (AUC 0.48" in res.stdout


# --------------------------------------------------------------------------- atomic runs


def test_a_failed_run_leaves_the_previous_run_intact(synth_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "bt"
    ok = backtest(synth_data_dir, out, "--symbols", "XRPUSDT,TRXUSDT", "--no-ml", *WINDOW)
    assert ok.exit_code == 0, ok.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "journal.sqlite3" in before and "trades.csv" in before
    broken = tmp_path / "broken"
    shutil.copytree(synth_data_dir, broken)
    data_path(broken, "TRXUSDT").write_bytes(b"PAR1 not really parquet")  # exists, fails to load
    res = backtest(broken, out, "--symbols", "XRPUSDT,TRXUSDT", "--no-ml", *WINDOW)
    one_error(res, "trxusdt/combined_15m.parquet")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["bt"]  # no staging folder left


def test_a_failed_first_run_leaves_no_empty_folders(synth_data_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(synth_data_dir, broken)
    data_path(broken, "XRPUSDT").write_bytes(b"garbage")
    res = backtest(broken, tmp_path / "a" / "b" / "out", "--symbol", "XRPUSDT", "--no-ml")
    one_error(res, "xrpusdt/combined_15m.parquet")
    assert not (tmp_path / "a").exists()


def test_files_beside_the_run_survive_a_new_run(synth_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "my_notes.txt").write_text("keep me")
    res = backtest(synth_data_dir, out, "--symbol", "XRPUSDT", "--no-ml", *WINDOW)
    assert res.exit_code == 0, res.output
    assert (out / "my_notes.txt").read_text() == "keep me" and (out / "trades.csv").is_file()
    assert str(out / "trades.csv") in res.stdout.replace("\n", "")  # final paths, not the stage


# --------------------------------------------------------------------------- up-front option errors


def _lock(folder: Path) -> Callable[[], None] | None:
    """Make ``folder`` refuse new entries: read-only for a normal user, immutable (chattr +i) for
    root, who ignores permissions. Returns the undo, or None when neither is possible here."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode:
        return None
    return lambda: subprocess.run([chattr, "-i", str(folder)], check=True)


def test_read_only_or_immutable_out_parent_is_one_line(synth_data_dir: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    undo = _lock(locked)
    if undo is None:
        pytest.skip("cannot make a folder read-only or immutable here")
    try:
        res = backtest(synth_data_dir, locked / "out", "--symbol", "XRPUSDT", "--no-ml")
        one_error(res, f"--out={locked / 'out'}", "not writable")
        assert list(locked.iterdir()) == []
    finally:
        undo()


@pytest.mark.parametrize("flag", ["--out", "--data-dir", "--model-dir"])
def test_an_existing_file_as_folder_is_one_line(synth_data_dir: Path, tmp_path: Path, flag: str) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    args = {"--out": str(tmp_path / "o"), "--data-dir": str(synth_data_dir), "--model-dir": str(tmp_path)}
    args[flag] = str(a_file if flag != "--out" else a_file / "sub")
    res = runner.invoke(
        app, ["backtest", "--symbol", "XRPUSDT", "--quiet", *(x for kv in args.items() for x in kv)]
    )
    one_error(res, flag, "a_file")


def test_walk_forward_with_too_many_folds_names_the_smallest_fold(
    synth_data_dir: Path, tmp_path: Path
) -> None:
    res = backtest(synth_data_dir, tmp_path / "o", "--symbol", "XRPUSDT", "--walk-forward", "100")
    err = one_error(res, "--walk-forward=100", "fold", "candles of XRPUSDT", "use --walk-forward")
    assert "fewer than 96" in err
    assert not (tmp_path / "o").exists()


def test_no_ml_with_walk_forward_is_refused(synth_data_dir: Path, tmp_path: Path) -> None:
    res = backtest(synth_data_dir, tmp_path / "o", "--walk-forward", "2", "--no-ml")
    one_error(res, "--no-ml with --walk-forward", "ml_off")


@pytest.mark.parametrize(
    "args",
    [["--symbol", "TRXUSDT"], ["--symbols", "TRXUSDT"], ["--all"]],
)
def test_every_symbol_option_is_accepted(synth_data_dir: Path, tmp_path: Path, args: list[str]) -> None:
    res = backtest(synth_data_dir, tmp_path / "o", *args, "--no-ml", *WINDOW)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert "TRXUSDT" in doc["parameters"]["symbols"]


def test_symbol_and_symbols_together_are_refused(synth_data_dir: Path, tmp_path: Path) -> None:
    res = backtest(synth_data_dir, tmp_path / "o", "--symbol", "XRPUSDT", "--symbols", "TRXUSDT")
    one_error(res, "--symbol and --symbols are mutually exclusive")


def test_an_unknown_symbol_is_told_its_filters_are_estimated(tmp_path: Path) -> None:
    data = tmp_path / "data"
    frame = synth_market(20, 3, symbol="AVAXUSDT")
    save_market(frame, data_path(data, "AVAXUSDT"), closed_through_ms=int(frame.index.asi8[-1]))
    res = backtest(data, tmp_path / "o", "--symbol", "AVAXUSDT", "--no-ml")
    assert res.exit_code == 0, res.output
    assert "AVAXUSDT: no recorded exchange filters" in res.stderr and "estimated" in res.stderr
    known = backtest(data, tmp_path / "o2", "--symbol", "AVAXUSDT", "--no-ml")
    assert "XRPUSDT" not in known.stderr


def test_override_for_an_untraded_symbol_is_warned(
    synth_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATR_SL_MULT_FOOUSDT", "1.5")
    res = backtest(synth_data_dir, tmp_path / "o", "--symbol", "XRPUSDT", "--no-ml", *WINDOW)
    assert res.exit_code == 0, res.output
    assert "warning: per-symbol settings for FOOUSDT" in res.stderr


def test_walk_forward_reports_the_filter_decisions_per_symbol(synth_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "wf"
    res = backtest(synth_data_dir, out, "--symbol", "XRPUSDT", "--walk-forward", "2")
    assert res.exit_code == 0, res.output
    assert "XRPUSDT ML on:" in res.stdout and "signals seen by the filter" in res.stdout
    doc = json.loads((out / "walk_forward.json").read_text())
    for fold in doc["folds"]:
        stats = fold["models"]["XRPUSDT"]["filter"]
        assert stats["seen"] == stats["accepted"] + stats["rejected"]
    assert str(out / "walk_forward.json") in res.stdout.replace("\n", "")  # final path, not the stage


def test_a_writable_out_inside_a_locked_folder_is_one_line(synth_data_dir: Path, tmp_path: Path) -> None:
    """The run is staged beside --out, so the folder holding --out must accept new entries too."""
    locked = tmp_path / "locked"
    (locked / "out").mkdir(parents=True)
    undo = _lock(locked)
    if undo is None:
        pytest.skip("cannot make a folder read-only or immutable here")
    try:
        res = backtest(synth_data_dir, locked / "out", "--symbol", "XRPUSDT", "--no-ml")
        one_error(res, f"--out={locked / 'out'}", "not writable", str(locked))
    finally:
        undo()
