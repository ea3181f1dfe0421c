"""Bad input to the operator commands: one line on stderr naming the culprit, exit 2, nothing sent
(no venue is listening here: any attempt to connect would fail differently)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from perpbot.engine.journal import Journal
from tests.runtime.opsenv import run_cli

NOWHERE = {
    "BINANCE_ENV": "custom",
    "BINANCE_FAPI_URL": "http://127.0.0.1:9",
    "BINANCE_WS_URL": "ws://127.0.0.1:9",
    "BINANCE_API_KEY": "k" * 64,
    "BINANCE_API_SECRET": "s" * 64,
    "SYMBOLS": "XRPUSDT,TRXUSDT",
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE", "PERPBOT", "SYMBOL"))}
    return {**env, **NOWHERE, **extra}


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal.sqlite3"
    Journal(path).close()
    return path


def _refused(args: list[str], cwd: Path, needle: str, **env: str) -> None:
    res = run_cli(args, _env(**env), cwd)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_no_journal_is_refused_by_every_command(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.sqlite3")
    _refused(["status", "--journal", missing], tmp_path, "none.sqlite3: no journal")
    _refused(["flatten", "--all", "--yes", "--journal", missing], tmp_path, "no journal")
    _refused(["kill-switch", "reset", "--symbol", "XRPUSDT", "--journal", missing], tmp_path, "no journal")
    assert not (tmp_path / "none.sqlite3").exists()


def test_a_journal_of_a_newer_perpbot_is_refused(tmp_path: Path, journal: Path) -> None:
    con = sqlite3.connect(journal)
    con.execute("PRAGMA user_version = 7")
    con.commit()
    con.close()
    for args in (
        ["status"],
        ["flatten", "--symbol", "XRPUSDT", "--yes"],
        ["kill-switch", "reset", "--symbol", "XRPUSDT"],
    ):
        _refused([*args, "--journal", str(journal)], tmp_path, "journal format 7 written by a newer perpbot")


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n" * 500)
    _refused(["status", "--journal", str(bad)], tmp_path, "notes.txt: not a perpbot journal")


def test_an_unknown_symbol_is_refused(tmp_path: Path, journal: Path) -> None:
    j = str(journal)
    _refused(
        ["status", "--symbol", "DOGEUSDT", "--journal", j], tmp_path, "--symbol DOGEUSDT: not a configured"
    )
    _refused(
        ["flatten", "--symbol", "DOGEUSDT", "--yes", "--journal", j], tmp_path, "DOGEUSDT: not a configured"
    )
    _refused(
        ["kill-switch", "reset", "--symbol", "DOGEUSDT", "--journal", j],
        tmp_path,
        "DOGEUSDT: not a configured",
    )
    _refused(["flatten", "--symbol", "XRP/USDT", "--yes", "--journal", j], tmp_path, "XRP/USDT")


def test_flatten_needs_a_target_and_live_needs_the_run_confirmation(tmp_path: Path, journal: Path) -> None:
    j = str(journal)
    _refused(["flatten", "--yes", "--journal", j], tmp_path, "flatten needs --symbol S or --all")
    _refused(
        ["flatten", "--all", "--symbol", "XRPUSDT", "--yes", "--journal", j], tmp_path, "mutually exclusive"
    )
    live = {"BINANCE_ENV": "live"}
    _refused(
        ["flatten", "--all", "--yes", "--journal", j],
        tmp_path,
        "pass --live and set PERPBOT_LIVE=yes",
        **live,
    )
    _refused(
        ["flatten", "--all", "--yes", "--live", "--journal", j],
        tmp_path,
        "--live without confirmation",
        **live,
    )
    _refused(["flatten", "--all", "--yes", "--live", "--journal", j], tmp_path, "needs BINANCE_ENV=live")


def test_flatten_asks_first_and_a_no_sends_nothing(tmp_path: Path, journal: Path) -> None:
    before = journal.read_bytes()
    res = run_cli(
        ["flatten", "--symbol", "XRPUSDT", "--journal", str(journal)], _env(), tmp_path, stdin="n\n"
    )
    assert res.returncode == 1, res.stderr
    assert "Close XRPUSDT on Binance custom (reduce-only MARKET) and cancel their orders?" in res.stdout
    assert "flatten cancelled; nothing was sent" in res.stdout
    assert journal.read_bytes() == before
