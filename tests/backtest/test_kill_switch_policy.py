"""``--kill-switch on|off|reset-after=DAYS``: on is the live rule, off never trips, a timed reset
re-opens the symbol DAYS later; blocked signals are counted."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from perpbot.backtest.kill_switch_policy import KillSwitchPolicy
from perpbot.backtest.runner import BacktestConfig, BacktestResult, run_backtest
from perpbot.errors import ConfigError

from .conftest import DAY_MS, SYMS4, loose_config


def _run(markets: dict[str, pd.DataFrame], policy: str | None) -> BacktestResult:
    kwargs = {} if policy is None else {"kill_switch": KillSwitchPolicy.parse(policy)}
    cfg = BacktestConfig(symbols=SYMS4, markets=markets, use_ml=False, **kwargs)
    return asyncio.run(run_backtest(cfg, loose_config(SYMS4)))


@pytest.fixture(scope="module")
def runs(markets4: dict[str, pd.DataFrame]) -> dict[str, BacktestResult]:
    return {p: _run(markets4, p) for p in ("on", "off", "reset-after=3")}


def test_parse() -> None:
    assert KillSwitchPolicy.parse("on").mode == "on"
    assert KillSwitchPolicy.parse(" OFF ").mode == "off"
    p = KillSwitchPolicy.parse("reset-after=2.5")
    assert (p.mode, p.reset_after_days, p.describe()) == ("reset", 2.5, "reset-after=2.5")
    for bad in ("maybe", "reset-after=0", "reset-after=-1", "reset-after=x", "reset-after=nan", ""):
        with pytest.raises(ConfigError, match="--kill-switch"):
            KillSwitchPolicy.parse(bad)


def test_on_is_the_default_and_latches(markets4: dict[str, pd.DataFrame], runs: dict) -> None:
    on = runs["on"]
    assert on.fingerprint == _run(markets4, None).fingerprint
    assert on.kill_switch_trips and not on.kill_switch_resets
    for trip in on.kill_switch_trips:  # latched: no entry of that symbol after its trip
        assert not [t for t in on.trades if t.symbol == trip["symbol"] and t.entry_time_ms > trip["time_ms"]]
    assert sum(on.kill_switch_blocked.values()) > 0
    assert any("kill switch blocked" in n for n in on.notes())
    assert on.parameters()["kill_switch"] == "on"
    assert on.parameters()["kill_switch_blocked_signals"] == on.kill_switch_blocked


def test_off_never_trips(runs: dict) -> None:
    off = runs["off"]
    assert not off.kill_switch_trips and sum(off.kill_switch_blocked.values()) == 0
    assert len(off.trades) > len(runs["on"].trades)
    assert any("kill switch off" in n for n in off.notes())


def test_reset_after_days_reopens_the_symbol(runs: dict) -> None:
    res = runs["reset-after=3"]
    assert res.kill_switch_resets
    for sym in SYMS4:
        trips = [t["time_ms"] for t in res.kill_switch_trips if t["symbol"] == sym]
        resets = [r["time_ms"] for r in res.kill_switch_resets if r["symbol"] == sym]
        assert len(resets) in (len(trips), len(trips) - 1)  # the last trip may outlive the run
        for trip, reset in zip(trips, resets, strict=False):
            assert reset >= trip + 3 * DAY_MS
            # Between a trip and its reset the symbol takes no new entry.
            assert not [t for t in res.trades if t.symbol == sym and trip < t.entry_time_ms < reset]
    first_reset = res.kill_switch_resets[0]
    assert [
        t
        for t in res.trades
        if t.symbol == first_reset["symbol"] and t.entry_time_ms > first_reset["time_ms"]
    ]
    assert len(runs["on"].trades) < len(res.trades) < len(runs["off"].trades)
    assert any("reset" in label for _, label in res.markers())
