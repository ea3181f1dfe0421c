"""``perpbot backtest`` through typer's CliRunner: success on synthetic data, bad input → exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from perpbot.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray ``.env`` or variables from the developer's shell."""
    monkeypatch.chdir(tmp_path)
    for name in ("SYMBOLS", "SYMBOL", "NO_ML_FILTER", "ML_BACKENDS", "ML_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)


def backtest(data_dir: Path, out: Path, *args: str) -> Result:
    """``perpbot backtest --data-dir D --out O --quiet ARGS…`` through the real CLI."""
    return runner.invoke(app, ["backtest", "--data-dir", str(data_dir), "--out", str(out), "--quiet", *args])


def test_backtest_success(synth_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = backtest(
        synth_data_dir,
        out,
        "--symbols",
        "XRPUSDT,TRXUSDT",
        "--model-dir",
        str(tmp_path / "no-models"),
        "--from",
        "2025-01-05",
        "--to",
        "2025-02-20T12:00",
        "--no-ml",  # ML on without a model is an error now (test_cli_failures.py)
    )
    assert res.exit_code == 0, res.output
    for name in ("trades.csv", "metrics.json", "equity.png", "equity.html"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["parameters"]["symbols"] == ["XRPUSDT", "TRXUSDT"]
    assert doc["parameters"]["start"] == "2025-01-05T00:00Z"
    assert doc["parameters"]["end"] == "2025-02-20T12:00Z"
    assert "PORTFOLIO" in res.stdout and doc["fingerprint"] in res.stdout


def test_backtest_twice_same_fingerprint(synth_data_dir: Path, tmp_path: Path) -> None:
    prints = []
    for k in range(2):
        out = tmp_path / f"o{k}"
        res = backtest(synth_data_dir, out, "--all", "--no-ml")
        assert res.exit_code == 0, res.output
        prints.append(json.loads((out / "metrics.json").read_text())["fingerprint"])
    assert prints[0] == prints[1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--symbols", "XRPUSDT", "--all"], "mutually exclusive"),
        (["--symbols", "xrp"], "--symbols"),
        (["--symbols", "XRPUSDT,XRPUSDT"], "twice"),
        (["--from", "2025-13-45"], "--from"),
        (["--to", "yesterday"], "--to"),
        (["--from", "2025-02-01", "--to", "2025-01-01"], "not before"),
        (["--walk-forward", "0"], "--walk-forward"),
        (["--symbols", "SOLUSDT"], "no market data for SOLUSDT"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    synth_data_dir: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    res = backtest(synth_data_dir, tmp_path / "o", *args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err  # one line whatever the terminal width
    assert err.startswith("error:") and needle in err
    assert not (tmp_path / "o").exists()


def test_missing_data_dir_exits_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["backtest", "--data-dir", str(tmp_path / "nothing"), "--quiet"])
    assert res.exit_code == 2
    assert "no market data" in res.stderr


def test_walk_forward_cli(synth_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "wf"
    res = backtest(synth_data_dir, out, "--symbols", "XRPUSDT", "--walk-forward", "2")
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "walk_forward.json").read_text())
    assert len(doc["folds"]) == 2
    assert {"ml_on", "ml_off"} <= set(doc["total"])
    for mode in ("ml_on", "ml_off"):
        assert (out / mode / "trades.csv").is_file()
    assert "Walk-forward" in res.stdout
    assert not (tmp_path / "models").exists()  # fold models never land in a models/ folder
    # Every path printed is where the file is once the staged run was moved into place.
    charts = next(line for line in res.stdout.splitlines() if line.startswith("charts: "))
    assert ".new." not in charts and str(out / "walk_forward.png") in charts
    assert (out / "walk_forward.png").is_file()


def test_the_garbage_collector_is_back_on_however_the_command_ends(
    synth_data_dir: Path, tmp_path: Path
) -> None:
    # perpbot backtest pauses the collector while its data stack imports (issue 13); an error or
    # a finished run leaves it as it was (here, in-process: pytest's own collector).
    import gc

    assert gc.isenabled()
    assert backtest(synth_data_dir, tmp_path / "bad", "--symbols", "SOLUSDT").exit_code == 2
    assert gc.isenabled()
    ok = backtest(synth_data_dir, tmp_path / "ok", "--symbols", "XRPUSDT", "--no-ml", "--from", "2025-02-01")
    assert ok.exit_code == 0, ok.output
    assert gc.isenabled()
