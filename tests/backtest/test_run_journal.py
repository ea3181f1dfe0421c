"""The backtest's journal (issue 13): in memory while the run lasts, a file at its end.

Why: the run's journal file is its own (``check_inputs`` refuses an existing one), so it needs
no writer thread; that thread's GIL hand-offs cost the loop ~10-15 % and the report's first
journal read waited for its queue."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from perpbot.backtest import runner
from perpbot.backtest.runner import BacktestConfig, run_backtest
from perpbot.config import AppConfig

from .conftest import SYMS3


def test_a_run_starts_no_thread_and_leaves_its_whole_journal_file(
    tmp_path: Path, markets4: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    drive = runner._drive
    threads: list[int] = []

    async def counting(*a: Any, **k: Any) -> Any:
        threads.append(threading.active_count())
        return await drive(*a, **k)

    monkeypatch.setattr(runner, "_drive", counting)
    path = tmp_path / "new folder" / "journal.sqlite3"  # created, as a file journal's folder was
    cfg = BacktestConfig(symbols=SYMS3, markets=markets4, use_ml=False, journal_path=path)
    res = asyncio.run(run_backtest(cfg, AppConfig(symbols=SYMS3)))
    assert threads == [1]  # no journal writer thread while the loop runs
    assert res.trades
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM trades").fetchone()[0] == len(res.trades)
        orders = db.execute("SELECT COUNT(*) FROM orders WHERE kind IN ('SL', 'TP')").fetchone()[0]
        assert orders >= 2 * len(res.trades)
    finally:
        db.close()


def test_a_journal_path_that_cannot_be_written_fails_before_the_run(
    tmp_path: Path, markets4: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal is written at the run's end, but its file is opened at the start (as a file
    journal was): a bad path costs no run."""
    looped: list[bool] = []

    async def drive(*a: Any, **k: Any) -> Any:
        looped.append(True)
        raise AssertionError("the loop ran")

    monkeypatch.setattr(runner, "_drive", drive)
    (tmp_path / "a file").write_text("")
    cfg = BacktestConfig(
        symbols=SYMS3, markets=markets4, use_ml=False, journal_path=tmp_path / "a file" / "journal.sqlite3"
    )
    with pytest.raises(OSError):
        asyncio.run(run_backtest(cfg, AppConfig(symbols=SYMS3)))
    assert not looped
