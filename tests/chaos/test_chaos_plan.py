"""What the chaos run injects (``runtime/chaos_plan.py``): every simulator fault kind, each shape
early in the run, in a form the simulator accepts, with no risk limit loosened."""

from __future__ import annotations

import random
from collections import Counter

from perpbot.config import load_config
from perpbot.runtime.chaos_plan import (
    BAR_MS,
    FAULTS,
    FIRST_PART,
    LOOSE,
    fault_plan,
    lead_candles,
    needs_position,
    wire,
)
from perpbot.simulator.faults import KINDS, parse_faults


def test_every_fault_kind_of_the_simulator_is_in_the_chaos_run() -> None:
    assert {f["kind"] for f in FAULTS} == set(KINDS)


def test_every_shape_is_a_fault_the_simulator_accepts_without_the_harness_keys() -> None:
    wired = [wire(f) for f in FAULTS]
    assert all("while" not in f for f in wired)
    parsed = parse_faults(wired, 0, "FAULTS")
    assert [p.kind for p in parsed] == [f["kind"] for f in FAULTS]
    assert needs_position({"kind": "adl", "while": "position"}) and not needs_position({"kind": "adl"})


def test_each_shape_comes_once_in_the_first_part_then_seeded_picks_anywhere() -> None:
    candles = 2880
    plan = fault_plan(random.Random(7), candles, per_day=3.0)
    assert len(plan) == 3 * 30
    assert [c for c, _ in plan] == sorted(c for c, _ in plan)
    early = [f for c, f in plan if c < candles * FIRST_PART + 2]
    shapes = Counter(repr(sorted(f.items())) for f in early)
    assert all(shapes[repr(sorted(f.items()))] >= 1 for f in FAULTS)
    assert max(c for c, _ in plan) > candles * FIRST_PART  # the extra ones spread over the run
    assert fault_plan(random.Random(7), candles, 3.0) == plan  # seeded
    assert fault_plan(random.Random(7), candles, 0.0) == []


def test_a_month_with_each_shape_once_has_exactly_the_shapes() -> None:
    plan = fault_plan(random.Random(1), 2880, per_day=len(FAULTS) / 30)
    assert sorted(repr(sorted(f.items())) for _, f in plan) == sorted(repr(sorted(f.items())) for f in FAULTS)


def test_a_late_income_fault_is_armed_only_while_its_rows_can_still_show_before_the_end() -> None:
    """A funding row held back past the replay's end could never be booked: the harness arms a
    ``late_income`` fault only with room for the next settlement (8 h at most), its delay and two
    hours to book the trade; every other kind plays out at once."""
    late = next(f for f in FAULTS if f["kind"] == "late_income")
    assert lead_candles(late) * BAR_MS >= 8 * 3_600_000 + late["ms"] + 2 * 3_600_000
    assert lead_candles({**late, "ms": 1}) < lead_candles(late)
    assert all(lead_candles(f) == 0 for f in FAULTS if f["kind"] != "late_income")
    # The CI month arms each shape in its first 40 %: the late rows always have the room.
    assert lead_candles(late) < 2880 * (1 - FIRST_PART)


def test_the_loose_settings_raise_no_risk_limit() -> None:
    """Strategy gates and leverage only: the position limits, the daily-loss limit and the kill
    switch are the production ones (the chaos checks hold the bots to them)."""
    assert set(LOOSE) <= {
        "SIGNAL_THRESHOLD",
        "ADX_THRESHOLD",
        "VOL_MULTIPLIER",
        "ATR_SL_MULT",
        "ATR_TP_MULT",
        "LEVERAGE",
    }
    loose, default = load_config(dict(LOOSE), env_file=None), load_config({}, env_file=None)
    assert loose.max_same_direction == default.max_same_direction
    assert loose.leverage < default.leverage
