"""The start-up seed of the window's OI/funding history: which candle each value lands on, when
the previous OI is stored (and when SPEC §2.3's "first live change is 0" still holds), and, from
a real ``perpbot simulate`` child through the adapter, that the seed equals the venue's market."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from perpbot.config import load_config
from perpbot.exchange.binance.market_stream import Candle
from perpbot.runtime.micro_seed import SEED_BARS, SEED_NEEDS_BARS, build_seed, fetch_seed
from perpbot.runtime.window import MarketWindow
from perpbot.simulator.market import load_market_data
from tests.contract.harness import DAYS, SYMBOLS, BinanceVenue, SimulatorPool, sim_pool

__all__ = ["sim_pool"]
BAR = 900_000
H8 = 8 * 3_600_000


def test_oi_changes_land_on_the_candle_that_closed_at_the_later_snapshot() -> None:
    opens = [H8 + k * BAR for k in range(4)]
    # Snapshots at the closes of the candle before the window and of each held candle.
    rows = [(H8, 100.0), (H8 + BAR, 110.0), (H8 + 2 * BAR, 99.0), (H8 + 3 * BAR, 99.0), (H8 + 4 * BAR, 198.0)]
    seed = build_seed(opens, rows, None)
    assert [t for t, _ in seed.oi_changes] == opens
    assert [round(c, 12) for _, c in seed.oi_changes] == [0.1, -0.1, 0.0, 1.0]
    # The last snapshot is the one at the last held candle's close: the first live change's base.
    assert seed.prev_oi == 198.0
    assert seed.funding == []


def test_the_previous_oi_stays_unset_when_the_last_snapshot_is_not_at_the_last_close() -> None:
    opens = [H8 + k * BAR for k in range(4)]
    rows = [(H8 + k * BAR, 100.0 + k) for k in range(4)]  # the last close's snapshot not published yet
    seed = build_seed(opens, rows, None)
    assert seed.prev_oi is None  # SPEC §2.3: the first live oi_change is 0
    assert [t for t, _ in seed.oi_changes] == opens[:3]
    assert build_seed(opens, None, None).prev_oi is None and build_seed(opens, [], None).oi_changes == []
    # A non-positive last snapshot is no base either (§2.3: OI ≤ 0 is never stored).
    assert build_seed(opens, [(H8 + 3 * BAR, 5.0), (H8 + 4 * BAR, 0.0)], None).prev_oi is None


def test_funding_is_the_latest_settled_rate_at_each_close_forward_filled() -> None:
    opens = [H8 - 2 * BAR + k * BAR for k in range(5)]  # two candles before the 08:00 settlement
    events = [(0, 0.0001), (H8, -0.0003)]
    seed = build_seed(opens, None, events)
    assert seed.funding == [
        (t, r) for t, r in zip(opens, [0.0001, 0.0001, -0.0003, -0.0003, -0.0003], strict=True)
    ]
    # Before the first settlement nothing is known: 0 (missing for the features), as the files.
    assert [r for _, r in build_seed(opens, None, [(H8, 0.0002)]).funding] == [
        0.0,
        0.0,
        0.0002,
        0.0002,
        0.0002,
    ]
    assert (
        build_seed(opens, None, None).funding == []
        and build_seed([], [(0, 1.0)], [(0, 1.0)]).oi_changes == []
    )


def test_the_window_takes_both_histories_on_the_candles_it_holds_only() -> None:
    cfg = load_config({"SYMBOLS": "XRPUSDT"}, env_file=None)
    w = MarketWindow(cfg)
    w.preload("XRPUSDT", [Candle("XRPUSDT", k * BAR, 1, 1, 1, 1, 1) for k in range(3)])
    assert w.held_opens("XRPUSDT") == [0, BAR, 2 * BAR]
    landed = w.seed_history(
        "XRPUSDT", [(BAR, 0.02), (3 * BAR, 0.5)], [(0, 1e-4), (BAR, 2e-4), (2 * BAR, 2e-4)]
    )
    assert landed == (1, 3)
    frame = w.frame("XRPUSDT")
    assert list(frame["oi_change"]) == [0.0, 0.02, 0.0]
    assert list(frame["funding_rate"]) == [1e-4, 2e-4, 2e-4]


@pytest.fixture
async def venue(sim_pool: SimulatorPool) -> AsyncIterator[BinanceVenue]:
    sim = sim_pool.take()
    v = BinanceVenue(sim)
    await v.start()
    yield v
    await v.close()
    sim_pool.release(sim)


def _market() -> Any:
    """The pool simulator's market, built in-process from the same arguments (deterministic)."""
    return load_market_data(list(SYMBOLS), None, None, DAYS)


async def test_the_seed_read_from_the_venue_is_the_venues_market(venue: BinanceVenue) -> None:
    market = _market()
    s = market.series["XRPUSDT"]
    held = list(range(market.start_ms - 600 * BAR, market.start_ms, BAR))  # a window of 600
    seed = await fetch_seed(venue.ex, "XRPUSDT", held)
    n = SEED_BARS  # the last 499 candles: what the live row's z-scores read, and a margin
    assert n >= SEED_NEEDS_BARS
    opens = held[-n:]
    first = s.index_at(opens[0])
    # Funding: exactly the venue's rate at each candle (the settled rate, forward-filled).
    assert seed.funding == [(t, float(s.funding[first + k])) for k, t in enumerate(opens)]
    # OI: the change between the venue's levels (as served: 0.001 contract), on every candle.
    level = np.round(s.oi_level[first - 1 : first + n], 3)
    want = level[1:] / level[:-1] - 1.0
    assert [t for t, _ in seed.oi_changes] == opens
    np.testing.assert_allclose([c for _, c in seed.oi_changes], want, rtol=0, atol=1e-12)
    assert seed.prev_oi == level[-1]


async def test_a_failed_history_read_seeds_nothing_of_its_kind(venue: BinanceVenue) -> None:
    market = _market()
    opens = list(range(market.start_ms - 600 * BAR, market.start_ms, BAR))
    # The OI read fails: no OI seed, no previous OI stored (SPEC §2.3: the first live change is
    # 0); funding is still seeded. And the other way round.
    await venue.inject({"kind": "http_error", "status": 500, "endpoint": "/futures/data/openInterestHist"})
    seed = await fetch_seed(venue.ex, "TRXUSDT", opens)
    assert seed.oi_changes == [] and seed.prev_oi is None
    assert len(seed.funding) == SEED_BARS
    await venue.inject({"kind": "http_error", "status": 502, "endpoint": "/fapi/v1/fundingRate"})
    seed = await fetch_seed(venue.ex, "TRXUSDT", opens)
    assert seed.funding == [] and len(seed.oi_changes) == SEED_BARS and seed.prev_oi is not None
