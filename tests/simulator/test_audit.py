"""``GET /sim/audit`` (``simulator/audit.py``): protection gaps in replay time, seen from the venue."""

from __future__ import annotations

import pytest

from perpbot.domain.types import OrderSide, OrderType
from perpbot.exchange.sim.settings import SimSettings
from perpbot.simulator.audit import ProtectionAudit
from perpbot.simulator.market import load_market_data
from perpbot.simulator.replay import Replay
from perpbot.simulator.venue import Venue

BAR_MS = 15 * 60_000


@pytest.fixture
def venue_audit() -> tuple[Venue, ProtectionAudit, Replay]:
    venue = Venue.create(load_market_data(["XRPUSDT"], None, None, 1), SimSettings(initial_balance=1000.0))
    audit = ProtectionAudit(venue)
    venue.listeners.append(lambda _ev: audit.observe())
    return venue, audit, Replay(venue, 0.0)


def _protect(venue: Venue, qty: float, kinds: tuple[OrderType, ...]) -> None:
    px = venue.mark("XRPUSDT")
    for k in kinds:
        trigger = px * (0.97 if k is OrderType.STOP_MARKET else 1.03)
        venue.place_algo("XRPUSDT", k, OrderSide.SELL, qty, round(trigger, 4), True, f"t-{k.value[:2]}")


def test_a_position_protected_at_once_has_a_zero_gap(
    venue_audit: tuple[Venue, ProtectionAudit, Replay],
) -> None:
    venue, audit, replay = venue_audit
    venue.market_order("XRPUSDT", OrderSide.BUY, 100.0, False, "entry-1", OrderType.MARKET)
    _protect(venue, 100.0, (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET))
    replay.advance(2)
    rep = audit.report()
    assert [g["duration_ms"] for g in rep["gaps"]] == [0]
    assert rep["fills"][0]["client_id"] == "entry-1" and rep["fills"][0]["reduce_only"] is False


def test_a_position_left_with_only_a_take_profit_across_a_candle_is_a_gap(
    venue_audit: tuple[Venue, ProtectionAudit, Replay],
) -> None:
    venue, audit, replay = venue_audit
    venue.market_order("XRPUSDT", OrderSide.BUY, 100.0, False, "entry-1", OrderType.MARKET)
    _protect(venue, 100.0, (OrderType.TAKE_PROFIT_MARKET,))
    replay.advance(2)
    _protect(venue, 100.0, (OrderType.STOP_MARKET,))
    (gap,) = audit.report()["gaps"]
    assert gap["duration_ms"] == 2 * BAR_MS and gap["covered_by"] == ["TAKE_PROFIT_MARKET"]
    assert gap["end_ms"] is not None


def test_an_undersized_stop_does_not_count_as_protection(
    venue_audit: tuple[Venue, ProtectionAudit, Replay],
) -> None:
    venue, audit, replay = venue_audit
    venue.market_order("XRPUSDT", OrderSide.BUY, 100.0, False, "entry-1", OrderType.MARKET)
    _protect(venue, 60.0, (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET))
    replay.advance(1)
    (gap,) = audit.report()["gaps"]
    assert gap["end_ms"] is None and gap["duration_ms"] == BAR_MS
