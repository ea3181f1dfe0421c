"""Issue 10 §4, the chaos test: a paper replay of three symbols through ``perpbot simulate`` with
every fault kind of the simulator injected at seeded random candles, and the bot process killed
with SIGKILL at seeded random points and restarted on the same journal. Checked at the end from
the simulator's side (``runtime/chaos_check.py``): no position bare for more than 5 s of replay
time, every execution in exactly one journal trade with the simulator's PnL, the limits and the
kill switch held, no client id opened two positions, every fault that hit left its line.

Three processes: pytest (the harness), the simulator and the bot (``runtime/chaos_bot.py``).

``CI_DAYS``: the replay length that fits the CI budget (< 5 min on 2 cores, both tests) at
today's paper speed (2-4 candles/s on a loaded machine); the issue's 30 days is
``bench/chaos.py --days 30`` until paper replays are fast enough (issue 10 §2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perpbot.runtime.chaos import FAULTS, ChaosSettings, run_chaos

CI_DAYS = 2
SEED = 20261202


@pytest.mark.slow
def test_a_paper_replay_under_faults_and_sigkills_keeps_every_invariant(tmp_path: Path) -> None:
    once_each = len(FAULTS) / CI_DAYS  # every kind once (the bench draws many more)
    res = run_chaos(
        ChaosSettings(
            days=CI_DAYS, seed=SEED, out=tmp_path, kills=3, faults_per_day=once_each, max_wall_s=240.0
        )
    )
    print("\n".join(res.summary()))
    assert res.violations == []
    assert res.kills == 3 and len(res.incarnations) == 4
    hit_kinds = {f["kind"] for f in res.faults if f.get("hits")}
    assert hit_kinds == {f["kind"] for f in FAULTS}, (
        f"fault kinds never hit: {set(f['kind'] for f in FAULTS) - hit_kinds}"
    )
    assert res.evidence.seen, "no fault left a line: the evidence check saw nothing"
    assert res.trades >= 10 and res.fills > res.trades * 2  # it traded, with partial fills


@pytest.mark.slow
def test_a_bot_that_never_places_its_stop_is_caught(tmp_path: Path) -> None:
    """The protection check is not vacuous: with the stop placement disabled (test-only hook in
    the bot process) the simulator's audit finds the bare positions."""
    res = run_chaos(
        ChaosSettings(days=1, seed=SEED, out=tmp_path, kills=0, faults_per_day=0.0, break_mode="no_stop")
    )
    bare = [v for v in res.violations if v.startswith("protection:")]
    assert bare and all("covered by ['TAKE_PROFIT_MARKET']" in v for v in bare)
