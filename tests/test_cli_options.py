"""Issue 11 §1: every command takes ``--symbol S``, ``--symbols A,B`` and ``--all`` the same way
(one shared helper), and an unusable output is refused with one line before any computing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import invoke, one_line_error

COMMANDS = {
    "fetch": ["fetch", "--base-url", "http://127.0.0.1:9"],
    "synth": ["synth"],
    "features": ["features", "--out", "f.parquet"],
    "train": ["train"],
    "tune": ["tune"],
    "deploy": ["deploy", "--from", "staging"],
    "backtest": ["backtest"],
    "demo": ["demo"],
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SYMBOLS", raising=False)
    monkeypatch.delenv("SYMBOL", raising=False)


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--symbol", "XRPUSDT", "--symbols", "TRXUSDT"], "--symbol and --symbols are mutually exclusive"),
        (["--symbols", "XRPUSDT", "--all"], "--symbols and --all are mutually exclusive"),
        (["--symbols", "XRPUSDT,XRPUSDT"], "listed twice"),
        (["--symbols", "xrp-usdt"], "--symbols"),
    ],
)
def test_every_command_takes_the_same_symbol_options(name: str, flags: list[str], needle: str) -> None:
    one_line_error(invoke(*COMMANDS[name], *flags), needle)


def test_features_refuses_an_unwritable_out_before_computing(tmp_path: Path) -> None:
    from perpbot.data.schema import data_path
    from perpbot.data.store import save_market
    from perpbot.data.synth import synth_market

    save_market(synth_market(5, 1, symbol="XRPUSDT"), data_path(tmp_path / "data", "XRPUSDT"))
    (tmp_path / "a_file").write_text("x")
    res = invoke("features", "--symbol", "XRPUSDT", "--out", "a_file/f.parquet", "--quiet")
    one_line_error(res, "--out=a_file", "not writable")
    res = invoke("features", "--symbols", "XRPUSDT,TRXUSDT", "--out", "f.parquet", "--quiet")
    one_line_error(res, "one symbol per --out file")
