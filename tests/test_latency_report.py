"""The decision-latency figures of ``bench/bench_runtime.py`` (``bench/latency_report.py``) from
a probe with known stamps: which moment starts each clock, and which entries count as ``quiet``
(no other symbol's fill handled inside their window)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from perpbot.latency import LatencyProbe

INPUTS = ("BTCUSDT", "ETHUSDT")


def _report() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "latency_report.py"
    spec = importlib.util.spec_from_file_location("latency_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bar(probe: LatencyProbe, open_ms: int, at: float) -> None:
    """A, B, BTC and ETH close at ``at`` + 0, 0.5, 1, 2 ms; every job handled at + 20 ms."""
    for i, sym in enumerate(("A", "B", *INPUTS)):
        probe.klines[(sym, open_ms)] = at + (0.0, 0.0005, 0.001, 0.002)[i]
        probe.kline_cpu[(sym, open_ms)] = 0.0
    for sym in ("A", "B"):
        probe.handled[(sym, open_ms)] = at + 0.020


def test_decision_starts_at_the_last_input_and_quiet_leaves_out_entries_crowded_by_other_fills() -> None:
    probe = LatencyProbe()
    _bar(probe, 0, 1.0)
    probe.entries.append(("A", 0, 1.006, 0.0))  # 4 ms after ETH, the last input
    probe.executions.append(("B", 1.003, 1.004))  # B's stop-loss booked inside A's window
    _bar(probe, 900_000, 2.0)
    probe.entries.append(("A", 900_000, 2.005, 0.0))  # 3 ms
    probe.executions.append(("A", 2.003, 2.004))  # A's own entry fill: not another symbol's
    probe.executions.append(("B", 2.006, 2.007))  # after the order: outside the window
    out = _report().summarise(probe, ["A", "B"], INPUTS, 0, {})
    assert out["flat_entries"] == 2 and out["first_entries"] == 2
    assert out["flat_decision_p99_ms"] == pytest.approx(4.0)
    assert out["flat_e2e_p99_ms"] == pytest.approx(6.0)  # from A's own kline
    assert out["quiet_entries"] == 1
    assert out["quiet_decision_p50_ms"] == pytest.approx(3.0)
    assert out["quiet_decision_p99_ms"] == pytest.approx(3.0)
