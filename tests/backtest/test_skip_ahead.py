"""Skip-ahead (issue 13): passing over the steps where nothing can happen gives the very same
trades, journal and metrics as stepping through every candle.

The synthetic market is chosen to make every reason to wake the loop occur: many signals, tight
stops (intra-bar triggers), funding settlements while positions are open, days on which the
daily-loss limit blocks entries, and kill-switch trips with timed resets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from perpbot.backtest.kill_switch_policy import KillSwitchPolicy
from perpbot.backtest.runner import BacktestConfig, BacktestResult, run_backtest
from perpbot.config import AppConfig, SignalParams
from perpbot.domain.types import CloseReason
from perpbot.fileio import jsonable

from .conftest import SYMS4

# Signals every few hours per symbol (quiet stretches between them), stops under one ATR.
BUSY_TIGHT = SignalParams(
    atr_sl_mult=0.6, atr_tp_mult=1.2, signal_threshold=3, adx_threshold=15.0, vol_multiplier=1.5
)


def _run(markets: dict[str, pd.DataFrame], journal: Path, *, skip: bool) -> BacktestResult:
    cfg = BacktestConfig(
        symbols=SYMS4,
        markets=markets,
        journal_path=journal,
        kill_switch=KillSwitchPolicy.parse("reset-after=2"),
        skip_ahead=skip,
    )
    # Leverage 20 and large margins: losses big enough to hit the daily limit on some days.
    app = AppConfig(symbols=SYMS4, default_params=BUSY_TIGHT, leverage=20, margin_max_ratio=0.9)
    return asyncio.run(run_backtest(cfg, app))


def _journal_rows(path: Path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


@pytest.fixture(scope="module")
def both(markets4: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> tuple:
    tmp = tmp_path_factory.mktemp("skip")
    stepped = _run(markets4, tmp / "stepped.sqlite3", skip=False)
    skipped = _run(markets4, tmp / "skipped.sqlite3", skip=True)
    return stepped, skipped, tmp


def test_the_market_exercises_every_wake_reason(both: tuple) -> None:
    stepped, skipped, _ = both
    reasons = {t.reason for t in stepped.trades}
    assert len(stepped.trades) >= 100
    assert {CloseReason.SL, CloseReason.TP} <= reasons
    assert sum(1 for t in stepped.trades if t.funding != 0.0) >= 5
    assert stepped.daily_limit_days >= 1
    assert stepped.kill_switch_trips and stepped.kill_switch_resets
    # ...and the skip-ahead really skipped a large part of the run.
    assert stepped.stats.steps_skipped == 0
    assert skipped.stats.candles_skipped > skipped.stats.candles // 10


def test_skipping_gives_the_same_trades_journal_and_metrics(both: tuple) -> None:
    stepped, skipped, tmp = both
    assert skipped.trades == stepped.trades
    assert skipped.fingerprint == stepped.fingerprint
    assert skipped.final_balance == stepped.final_balance
    assert _journal_rows(tmp / "skipped.sqlite3") == _journal_rows(tmp / "stepped.sqlite3")
    assert jsonable(skipped.metrics.as_dict()) == jsonable(stepped.metrics.as_dict())
    a, b = stepped.parameters(), skipped.parameters()
    for doc in (a, b):
        doc.pop("stats")
    assert jsonable(a) == jsonable(b)
    mech = ("candles", "bot_candles", "signals", "timeline_steps", "bot_errors", "alerts", "close_timeouts")
    assert {k: getattr(stepped.stats, k) for k in mech} == {k: getattr(skipped.stats, k) for k in mech}
    assert skipped.kill_switch_blocked == stepped.kill_switch_blocked
    assert skipped.kill_switch_resets == stepped.kill_switch_resets


def test_a_flat_run_without_signals_skips_everything(markets4: dict[str, pd.DataFrame]) -> None:
    never = SignalParams(signal_threshold=99)
    cfg = BacktestConfig(symbols=SYMS4[:2], markets=markets4)
    res = asyncio.run(run_backtest(cfg, AppConfig(symbols=SYMS4[:2], default_params=never)))
    assert res.trades == [] and res.stats.signals == 0
    # Only the last step (the end-of-data close of the symbols' last candle) is stepped.
    assert res.stats.steps_skipped == res.stats.timeline_steps - 1
    assert dataclasses.replace(res.stats, seconds_loop=0.0).candles_skipped == res.stats.candles - 2
