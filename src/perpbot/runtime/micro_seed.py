"""Start-up seeding of the window's open-interest and funding history from the venue's history
endpoints, so that the live feature row equals the backtest's from the first candle.

Why more than SPEC §2.3's five OI changes: the four OI/funding features are 96-bar rolling
z-scores (SPEC §4: ``z96`` of the OI change, of the forward-filled funding rate and of the OI
MA5; the spread uses ``z96(oi)``). The batch features read them from the recorded history; a live
window that holds five seeded OI changes and no funding at all gives different z-scores for the
first ~100 candles after every start (measured on a paper replay: all four features differ on
every candle of the first day; every other feature is bit-identical). With a model that uses
them, that changes entries on the first day of every restart. So start-up now reads, for the
last ``SEED_BARS`` (499) candles the window holds:

* ``openInterestHist`` (``period=15m``, one page of 500 snapshots, the venue's cap; 5.2 days,
  well inside the 30 days it keeps): the relative change between successive snapshots, each
  placed on the candle that closed at the later snapshot's time (``window.oi_seed``, the candle a
  live fetch at that close gives it to, SPEC §2.3);
* ``fundingRate`` (settled rates from one funding period before the first candle): each candle
  gets the latest rate settled by its close, forward-filled, by the very function that shaped
  the recorded files (``data.candle_shape.funding_on_candles``).

And one change to SPEC §2.3's start-up rule, for the same reason: §2.3 leaves the stored previous
OI unset, so the first live ``oi_change`` after a start is 0 (missing, for the features) where the
recorded history has the real change. When the seeded history's last snapshot is the one taken at
the close of the last candle the window holds, it *is* the previous OI of the first live candle,
so it is stored and the first live change is a real one. When it is not (the venue has not
published that snapshot yet, or the history failed), §2.3 holds: nothing is stored, the first
live change is 0. Every later live value follows §2.3 unchanged (fetched at each close, fallbacks,
the stored previous OI).

Why 499 candles and not the whole window (1000): the live row is the window's last row, and a
96-bar z-score there reads, bit for bit, two 96-bar blocks back (``ml.features.rolling_zscore``:
blocks anchored to the absolute bar number), plus four bars for the OI MA5: 196 candles. One page
covers that with a wide margin; the whole window would cost three OI requests per symbol (~7 s
more start-up with 100 symbols, measured) for rows no feature reads. Older candles of the window
keep no OI/funding (missing), which only the frame's earlier rows see.

A failed read seeds nothing of its kind (SPEC §2.3's fallback: the feature sees it missing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from perpbot.data.candle_shape import funding_on_candles, ms_index
from perpbot.data.schema import BAR_MS
from perpbot.ml.features import OI_MA_WINDOW, Z_WINDOW_MICRO
from perpbot.runtime.window import MarketWindow, oi_seed

log = logging.getLogger(__name__)

OI_PAGE = 500  # rows per openInterestHist request (the venue's cap)
SEED_BARS = OI_PAGE - 1  # candles seeded: one page of snapshots gives their changes
# What the z-scores of the live row read (module docstring): the seed must cover it.
SEED_NEEDS_BARS = 2 * Z_WINDOW_MICRO + OI_MA_WINDOW - 1
assert SEED_BARS >= SEED_NEEDS_BARS
FUNDING_PERIOD_MS = 8 * 3_600_000
FUNDING_PAGE = 1000  # rows per fundingRate request (the venue's cap)


@dataclass(slots=True)
class MicroSeed:
    """One symbol's seeded history: ``(candle open ms, value)`` pairs for the window, and the
    snapshot that becomes the stored previous OI (None: SPEC §2.3, the first live change is 0)."""

    oi_changes: list[tuple[int, float]] = field(default_factory=list)
    funding: list[tuple[int, float]] = field(default_factory=list)
    prev_oi: float | None = None


def build_seed(
    opens: list[int],
    oi_rows: list[tuple[int, float]] | None,
    funding_events: list[tuple[int, float]] | None,
    bar_ms: int = BAR_MS,
) -> MicroSeed:
    """The seed of a window holding candles ``opens`` (oldest first) from the history rows (None:
    the read failed). Pure, so the rule is tested without a venue."""
    seed = MicroSeed()
    if not opens:
        return seed
    held = set(opens)
    if oi_rows:
        rows = sorted(dict(oi_rows).items())
        seed.oi_changes = [(t, c) for t, c in oi_seed(rows, bar_ms) if t in held]
        last_ts, last_value = rows[-1]
        if last_ts == opens[-1] + bar_ms and last_value > 0:
            seed.prev_oi = float(last_value)
    if funding_events:
        events = pd.Series(dict(funding_events), dtype="float64").sort_index()
        events.index = ms_index(events.index.to_numpy())
        rates = funding_on_candles(ms_index(opens), events)
        seed.funding = [(t, float(r)) for t, r in zip(opens, rates.tolist(), strict=True)]
    return seed


async def fetch_seed(exchange: Any, symbol: str, opens: list[int], bar_ms: int = BAR_MS) -> MicroSeed:
    """Read the history for the last ``SEED_BARS`` candles of ``opens`` and build the seed
    (module docstring). Two requests, concurrent:

    * OI: the ``SEED_BARS + 1`` snapshots ending at the last candle's close, asked by ``endTime``
      and ``limit`` only (the most recent rows up to it), so the answer is the same whether the
      venue filters on the snapshot's time or on its candle's open;
    * funding: the settlements from one period before the first seeded candle (the rate in force
      at it) to the last candle's close (≤ 1000 rows: 16 for 499 candles).
    """
    opens = opens[-SEED_BARS:]
    if not opens:
        return MicroSeed()
    end = opens[-1] + bar_ms  # the last candle's close: its snapshot is the first live change's base
    oi, funding = await asyncio.gather(
        exchange.open_interest_history(symbol, len(opens) + 1, end_ms=end),
        exchange.funding_rate_history(symbol, opens[0] - FUNDING_PERIOD_MS, end - 1, FUNDING_PAGE),
    )
    if oi is None:
        log.warning("%s: no open-interest history seeded (read failed); first live change 0", symbol)
    if funding is None:
        log.warning("%s: no funding history seeded (the read failed)", symbol)
    return build_seed(opens, oi, funding, bar_ms)


async def seed_window(
    exchange: Any, window: MarketWindow, symbols: Iterable[str], prev_oi: dict[str, float]
) -> None:
    """Seed every traded symbol's preloaded window and, where proven (module docstring), its
    stored previous OI (``prev_oi``, the runtime's SPEC §2.3 state)."""
    syms = list(symbols)
    seeds = await asyncio.gather(*(fetch_seed(exchange, s, window.held_opens(s)) for s in syms))
    for sym, seed in zip(syms, seeds, strict=True):
        window.seed_history(sym, seed.oi_changes, seed.funding)
        if seed.prev_oi is not None:
            prev_oi[sym] = seed.prev_oi
