"""Issue 7 §3: the trading invariants hold on the hostile exchange, whatever the schedule.

Hypothesis draws multi-symbol markets (seeded random walks, random signal schedules) and a
random mix of every §1 misbehaviour (ACK then late fills, partial fills, EXPIRED orders,
timeouts after execution, failed cancels, events during the call / late / never, delayed
income rows, partial auto-deleveraging). ``perpbot.backtest.hostile`` runs the real bots through
it and checks after every step: every open position has a reduce-only SL and TP for its full
quantity (repaired by the next step's reconcile at the latest), the risk registry equals the
exchange's positions (same bound), the position limits held, the risk manager's daily PnL equals
the journal's (no loss counted twice); and at the end: every execution of the simulator is in
exactly one trade, the journal's trades are the bots', the wallet equals the initial balance
plus the sum of the trades' net PnL. A longer run: ``bench/bench_hostile.py``.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perpbot.backtest.hostile import BAR_MS, T0, HostileScenario, run_hostile
from perpbot.exchange.sim.faults import FaultPlan

prob = st.sampled_from([0.0, 0.0, 0.1, 0.25, 0.5])
# no dead stream, 45 minutes of it, 15 minutes of it (every event produced inside is lost)
DEAD_WINDOWS = [(), ((T0 + 3 * BAR_MS, T0 + 6 * BAR_MS),), ((T0 + 10 * BAR_MS, T0 + 11 * BAR_MS),)]


@st.composite
def fault_plans(draw: st.DrawFn) -> FaultPlan:
    late = draw(st.sampled_from([0.0, 0.1, 0.3]))
    drop = draw(st.sampled_from([0.0, 0.1, 0.3]))
    delay = draw(st.sampled_from([0.0, 5.0, 60.0]))
    dead = draw(
        st.sampled_from([(), ((T0 + 3 * BAR_MS, T0 + 6 * BAR_MS),), ((T0 + 10 * BAR_MS, T0 + 11 * BAR_MS),)])
    )
    return FaultPlan(
        seed=draw(st.integers(0, 2**31 - 1)),
        p_ack=draw(prob),
        p_split=draw(prob),
        p_expire=draw(st.sampled_from([0.0, 0.1, 0.3])),
        p_timeout=draw(st.sampled_from([0.0, 0.1, 0.2])),
        p_lost=draw(st.sampled_from([0.0, 0.1])),
        p_read_fail=draw(st.sampled_from([0.0, 0.05, 0.15])),
        dead_stream=dead,
        p_cancel_fail=draw(prob),
        p_during=draw(prob),
        p_late=late,
        p_drop=drop,
        income_delay_s=(0.0, delay),
        p_adl_per_bar=draw(st.sampled_from([0.0, 0.02, 0.08])),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> HostileScenario:
    return HostileScenario(
        seed=draw(st.integers(0, 2**31 - 1)),
        n_symbols=draw(st.integers(2, 3)),
        n_bars=draw(st.integers(20, 40)),
        p_signal=draw(st.sampled_from([0.15, 0.3])),
        plan=draw(fault_plans()),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(scenarios())
def test_invariants_hold_on_the_hostile_exchange(sc: HostileScenario) -> None:
    report = asyncio.run(run_hostile(sc))
    assert report.steps == sc.n_bars
    assert report.violations == []


def test_the_checks_can_fail() -> None:
    """The checker is not vacuous: a bot that forgets its stop is caught."""
    from perpbot.engine import protection

    original = protection.ProtectionMixin._place_protective

    async def no_stop(self, pos, kind):  # type: ignore[no-untyped-def]
        if kind == "SL":
            return type("Fake", (), {"algo_id": 0})()
        return await original(self, pos, kind)

    protection.ProtectionMixin._place_protective = no_stop  # type: ignore[method-assign]
    try:
        report = asyncio.run(run_hostile(HostileScenario(seed=3, plan=FaultPlan(seed=3))))
    finally:
        protection.ProtectionMixin._place_protective = original  # type: ignore[method-assign]
    assert any("protected by" in v for v in report.violations)
