"""``perpbot demo`` (issue 11 §1): a --days value that cannot train is refused before any
training, with one line; a failed demo leaves the previous demo's files intact and no staging
folder behind; the demo takes the shared symbol options."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import invoke, one_line_error


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SYMBOLS", "SYMBOL", "SIGNAL_THRESHOLD", "ADX_THRESHOLD", "VOL_MULTIPLIER"):
        monkeypatch.delenv(name, raising=False)


def test_days_too_short_to_train_is_refused_up_front(tmp_path: Path) -> None:
    previous = tmp_path / "demo_out"
    previous.mkdir()
    (previous / "earlier_report.txt").write_text("from the last demo")
    res = invoke("demo", "--symbol", "XRPUSDT", "--days", "60", "--out", str(previous), "--quiet")
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: --days=60: too short to train XRPUSDT"), errors
    assert "training samples, need 200" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_out"]  # no staging folder left
    assert [p.name for p in previous.iterdir()] == ["earlier_report.txt"]
    assert "models" not in res.output  # nothing was trained


def test_demo_refuses_an_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    one_line_error(invoke("demo", "--out", str(blocker / "demo"), "--quiet"), "--out=", "not writable")


def test_demo_symbol_options_are_the_shared_ones() -> None:
    one_line_error(invoke("demo", "--symbol", "XRPUSDT", "--all"), "mutually exclusive")
