"""``perpbot optimize`` through the real CLI on SQLite: a run, its resume, and every bad input
(one line on stderr, exit 2, before any trial)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import optuna
import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from perpbot.cli.main import app
from perpbot.data.schema import data_path
from perpbot.data.store import save_market

from .conftest import SYMBOL

runner = CliRunner()
BASE = ("--symbol", SYMBOL, "--folds", "3", "--min-trades", "5")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SYMBOLS", "SYMBOL", "ATR_SL_MULT", "SIGNAL_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)


def optimize(data_dir: Path, out: Path, *args: str) -> Result:
    return runner.invoke(
        app,
        ["optimize", "--data-dir", str(data_dir), "--out", str(out), "--env-file", str(out / "x.env"), *args],
    )


def one_error_line(res: Result) -> str:
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in res.output, res.stderr
    return err


def trial_count(out: Path, name: str = "perpbot-optimize") -> int:
    st = optuna.load_study(study_name=f"{name}-{SYMBOL}", storage=f"sqlite:///{out / 'optimize.sqlite3'}")
    return len(st.trials)


def test_run_writes_report_and_charts_then_resumes(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    res = optimize(data_dir, out, *BASE, "--trials", "5", "--sampler", "tpe")
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "optimize.json").read_text())
    sym = doc["symbols"][SYMBOL]
    assert sum(sym["trials"].values()) == 5 and sym["trials"]["error"] == 0
    assert [w["fold"] for w in sym["windows"]] == [1, 2, 3]
    assert set(sym["verdict"]) == {"best_beats_defaults_out_of_sample", "reasons", "rule"}
    assert sym["verdict"]["reasons"]
    assert sym["defaults"]["params"]["ATR_SL_MULT"] == 2.0
    assert sym["pbo"]["pbo"] is None or 0.0 <= sym["pbo"]["pbo"] <= 1.0
    promoted = sym["promotion"]["promoted"]
    assert promoted == sym["verdict"]["best_beats_defaults_out_of_sample"]
    assert (out / "x.env").exists() == promoted
    for chart in ("importances", "oos_vs_is", "best_equity"):
        assert (out / f"xrpusdt_{chart}.png").stat().st_size > 1000
    assert ("PROMOTED" if promoted else "NOT promoted") in res.stdout

    again = optimize(data_dir, out, *BASE, "--trials", "7", "--sampler", "tpe")
    assert again.exit_code == 0, again.output
    assert trial_count(out) == 7  # resumed: 5 kept, 2 added


def test_bad_trials_metric_and_folds(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert "--trials 0: must be >= 1" in one_error_line(optimize(data_dir, out, *BASE, "--trials", "0"))
    assert "--metric 'sortino': unknown metric" in one_error_line(
        optimize(data_dir, out, *BASE, "--metric", "sortino")
    )
    err = one_error_line(optimize(data_dir, out, "--symbol", SYMBOL, "--folds", "9"))
    assert err.startswith("error: XRPUSDT: 4031 candles are too few for 9 folds")  # last partial dropped
    assert not (out / "optimize.sqlite3").exists()  # nothing was created before the checks


def test_unreachable_storage(data_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://perpbot:s3cret@127.0.0.1:{port}/perpbot"
    err = one_error_line(optimize(data_dir, tmp_path / "o", *BASE, "--storage", url))
    assert f"--storage postgresql+psycopg://perpbot:***@127.0.0.1:{port}/perpbot: cannot open" in err
    assert "s3cret" not in err


def test_study_with_other_settings_or_data_is_refused(
    data_dir: Path, tmp_path: Path, market: pd.DataFrame
) -> None:
    out = tmp_path / "o"
    assert optimize(data_dir, out, *BASE, "--trials", "2").exit_code == 0
    err = one_error_line(optimize(data_dir, out, *BASE, "--trials", "3", "--metric", "net"))
    assert "study 'perpbot-optimize-XRPUSDT' was made with another metric" in err
    other = tmp_path / "other"
    path = data_path(other, SYMBOL)
    path.parent.mkdir(parents=True)
    changed = market.copy()
    changed.iloc[100, changed.columns.get_loc("volume")] *= 1.5
    save_market(changed, path)
    err = one_error_line(optimize(other, out, *BASE, "--trials", "3"))
    assert "was made with another data" in err
    assert trial_count(out) == 2  # no trial ran for the refused workers


def test_ml_without_a_model_is_refused(data_dir: Path, tmp_path: Path) -> None:
    err = one_error_line(
        optimize(data_dir, tmp_path / "o", *BASE, "--ml", "--model-dir", str(tmp_path / "no-models"))
    )
    assert "--ml: no usable model for XRPUSDT" in err
