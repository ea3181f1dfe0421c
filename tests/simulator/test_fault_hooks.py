"""The fault shapes the chaos test adds (``simulator/faults.py``): an ``adl`` now, an
``http_error`` for one HTTP method only (a failed cancel), and the hit times every fault records."""

from __future__ import annotations

import pytest

from perpbot.domain.types import OrderSide, OrderType
from perpbot.simulator.config import SimulatorConfig
from perpbot.simulator.faults import FaultBook, parse_faults
from perpbot.simulator.server import SimServer


@pytest.fixture
def srv() -> SimServer:
    return SimServer(
        SimulatorConfig(symbols=("XRPUSDT", "TRXUSDT"), days=1, speed=0.0), wall_ms=lambda: 1_000
    )


def test_an_adl_fault_deleverages_part_of_the_open_position(srv: SimServer) -> None:
    srv.venue.market_order("TRXUSDT", OrderSide.BUY, 100.0, False, "entry-1", OrderType.MARKET)
    (f,) = parse_faults({"kind": "adl", "fraction": 0.5}, 1_000, "test")
    srv.inject([f])
    pos = srv.venue.engine.position("TRXUSDT")
    assert pos is not None and pos.quantity == pytest.approx(50.0)
    last = srv.audit.report()["fills"][-1]
    assert last["client_id"] == "adl_autoclose" and last["reduce_only"] is True
    assert (f.hits, f.injected_ms, f.first_hit_ms) == (1, 1_000, 1_000)


def test_an_adl_fault_without_a_position_hits_nothing(srv: SimServer) -> None:
    (f,) = parse_faults({"kind": "adl"}, 1_000, "test")
    srv.inject([f])
    assert f.hits == 0 and srv.audit.report()["fills"] == []


def test_an_http_error_for_delete_spares_the_post_of_the_same_endpoint() -> None:
    now = [5]
    book = FaultBook(lambda: now[0])
    book.add(
        parse_faults({"kind": "http_error", "endpoint": "/fapi/v1/algoOrder", "method": "DELETE"}, 5, "t")
    )
    assert book.take("http_error", "/fapi/v1/algoOrder", None, method="POST") is None
    now[0] = 9
    f = book.take("http_error", "/fapi/v1/algoOrder", None, method="DELETE")
    assert f is not None and f.first_hit_ms == 9 and f.as_json()["first_hit_ms"] == 9


def test_a_skewed_clock_counts_each_read_as_a_hit() -> None:
    book = FaultBook(lambda: 7)
    book.add(parse_faults({"kind": "time_skew", "ms": 30_000, "seconds": 2}, 7, "t"))
    assert book.skew_ms() == 30_000 and book.skew_ms() == 30_000
    (f,) = book.log
    assert f.hits == 2 and f.first_hit_ms == 7


@pytest.mark.parametrize(
    ("doc", "culprit"),
    [({"kind": "adl", "fraction": 0}, "'fraction'"), ({"kind": "http_error", "method": "PATCH"}, "'method'")],
)
def test_bad_fault_shapes_name_the_culprit(doc: dict, culprit: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=culprit):
        parse_faults(doc, 0, "body")
