"""Issue 10 §4, the chaos test: a paper replay of three symbols over ``CI_DAYS`` = 30 simulated
days through ``perpbot simulate``, with every fault shape of ``chaos_plan.FAULTS`` (every kind
the simulator has, late and swapped user-stream events included) injected at seeded random
candles, and the bot process killed with SIGKILL at seeded random points and restarted on the
same journal. Checked at the end from the simulator's side (``runtime/chaos_check.py``): no
position bare for more than 5 s of replay time, every execution in exactly one journal trade
with the simulator's PnL, the limits and the kill switch held, no client id opened two
positions, every fault that hit left its line; and here: every fault was hit, it traded on all
three symbols with partial fills.

What is loosened so that all three symbols trade through the month (``chaos_plan.LOOSE``): the
strategy's gates (signal threshold 2, no ADX or volume filter) and LEVERAGE 3 instead of 10
(a third of the position size, so the fixed 5 % daily-loss limit is reached on bad days only).
No risk limit is raised: 3 positions, 2 per side, 5 % daily loss, and the kill switch's rule
are the production ones and are checked. The harness plays the operator of a tripped kill
switch: after a day of replay time tripped, it runs ``perpbot kill-switch reset``'s code on the
journal, which the running bot takes at its next candle; an entry between a trip and its reset is
a violation.

Three processes: pytest (the harness), the simulator and the bot (``runtime/chaos_bot.py``).
Each shape of ``FAULTS`` is injected once, in the first 40 % of the month (the wall-time costly
ones, a latency past the 10 s request timeout and a silent market stream past its 5 s watchdog,
once each); 4 SIGKILLs.

Budget: both tests < 5 min on 2 cores. The replay used to be paced by the request-weight
budget (~116 weight per candle against a limit counted per wall minute: ~6.7 candles/s at most,
~8.7 min for the month); limits are now counted on paced replay time as in ``perpbot paper``
(``ChaosSettings.weight_limit``). Measured 2026-12-02 on the shared 2-core machine: 2880 candles
in 144 s (20 candles/s; the test 146 s) at load average 1.8-3.4, 208 s at load 4.6-5.1, 323 s at
load 5.8-6.5 with a 180-day chaos run beside it; 5 bot processes, 19/19 faults hit, ~530 trades, ~1500
executions, 0 violations; bot + simulator ~125 s of CPU for the month (~43 ms per candle): the
wall times above are that CPU stretched by the other helpers' load. The no-stop test ~20 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perpbot.runtime.chaos import FAULTS, ChaosSettings, run_chaos
from perpbot.simulator.faults import KINDS

CI_DAYS = 30
SEED = 20261202
KILLS = 4


@pytest.mark.slow
def test_a_paper_replay_under_faults_and_sigkills_keeps_every_invariant(tmp_path: Path) -> None:
    once_each = len(FAULTS) / CI_DAYS  # every shape once, in the first 40 % of the month
    res = run_chaos(
        ChaosSettings(
            days=CI_DAYS,
            seed=SEED,
            out=tmp_path,
            kills=KILLS,
            faults_per_day=once_each,
            max_wall_s=600.0,
        )
    )
    print("\n".join(res.summary()))
    assert res.violations == []
    assert res.kills == KILLS and len(res.incarnations) >= KILLS + 1
    hit_kinds = {f["kind"] for f in res.faults if f.get("hits")}
    assert hit_kinds == set(KINDS), f"fault kinds never hit: {set(KINDS) - hit_kinds}"
    assert res.evidence.not_hit == [], f"faults never hit: {res.evidence.not_hit}"
    assert res.evidence.seen, "no fault left a line: the evidence check saw nothing"
    traded = {f["symbol"] for f in res.audit["fills"]}
    assert traded == {"XRPUSDT", "TRXUSDT", "DOGEUSDT"}
    assert res.trades >= 100 and res.fills > res.trades * 2  # it traded, with partial fills
    late = [f for f in res.faults if f["kind"] in ("late_events", "swap_events") and f["hits"]]
    assert late and all(f["withheld"] for f in late)  # user events really were held back


@pytest.mark.slow
def test_a_bot_that_never_places_its_stop_is_caught(tmp_path: Path) -> None:
    """The protection check is not vacuous: with the stop placement disabled (test-only hook in
    the bot process) the simulator's audit finds the bare positions."""
    res = run_chaos(
        ChaosSettings(days=1, seed=SEED, out=tmp_path, kills=0, faults_per_day=0.0, break_mode="no_stop")
    )
    bare = [v for v in res.violations if v.startswith("protection:")]
    assert bare and all("covered by ['TAKE_PROFIT_MARKET']" in v for v in bare)
