"""The replay's order within a candle (``simulator/replay.py``): what a Binance client sees.

A stop that triggers during the 15 minutes is streamed when the price crosses it, before the
candle closes, and every symbol's candle closes at the same moment. So per candle: each symbol's
intra-candle updates, then its bar's fills; the closed klines last, together."""

from __future__ import annotations

import asyncio
from typing import Any

from perpbot.domain.types import OrderSide, OrderType
from perpbot.exchange.sim.settings import SimSettings
from perpbot.simulator.market import load_market_data
from perpbot.simulator.replay import Replay
from perpbot.simulator.venue import Venue

SYMBOLS = ["XRPUSDT", "TRXUSDT"]


def _recording_replay() -> tuple[Venue, Replay, list[tuple[str, Any]]]:
    venue = Venue.create(load_market_data(SYMBOLS, None, None, 2), SimSettings(initial_balance=1000.0))
    seen: list[tuple[str, Any]] = []
    replay = Replay(
        venue,
        0.0,
        kline_sinks=[lambda sym, t, *_: seen.append(("closed", (sym, t)))],
        path_sinks=[lambda sym, t, *_: seen.append(("path", (sym, t)))],
    )
    venue.listeners.append(lambda ev: seen.append(("event", type(ev).__name__)))
    return venue, replay, seen


def test_a_stop_hit_during_the_candle_is_streamed_before_any_closed_kline() -> None:
    venue, replay, seen = _recording_replay()
    venue.market_order("XRPUSDT", OrderSide.BUY, 100.0, False, "entry-1", OrderType.MARKET)
    px = venue.mark("XRPUSDT")
    # A stop a hair below the price and a take-profit a hair above: one of them fires in the
    # next candle, whichever way the path goes.
    venue.place_algo(
        "XRPUSDT", OrderType.STOP_MARKET, OrderSide.SELL, 100.0, round(px * 0.999, 4), True, "sl"
    )
    venue.place_algo(
        "XRPUSDT", OrderType.TAKE_PROFIT_MARKET, OrderSide.SELL, 100.0, round(px * 1.001, 4), True, "tp"
    )
    seen.clear()
    replay.advance(1)
    kinds = [k for k, _ in seen]
    first_close = kinds.index("closed")
    assert "event" in kinds[:first_close]  # the fill and the algo updates
    assert set(kinds[first_close:]) == {"closed"}  # nothing after the closes but closes
    assert [v for k, v in seen if k == "closed"] == [(s, seen[0][1][1]) for s in SYMBOLS]
    assert len(venue.open_algos("XRPUSDT")) < 2  # one of them fired in this candle


def test_every_candle_reports_its_path_before_its_close_and_each_symbol_once() -> None:
    _venue, replay, seen = _recording_replay()
    replay.advance(3)
    paths = [v for k, v in seen if k == "path"]
    closes = [v for k, v in seen if k == "closed"]
    assert paths == closes and len(closes) == 3 * len(SYMBOLS)
    for candle in closes:
        assert seen.index(("path", candle)) < seen.index(("closed", candle))


async def test_a_close_gap_streams_the_fills_then_waits_before_the_closes() -> None:
    venue, replay, seen = _recording_replay()
    venue.market_order("XRPUSDT", OrderSide.BUY, 100.0, False, "entry-1", OrderType.MARKET)
    seen.clear()
    job = asyncio.create_task(replay.advance_async(1, close_gap_s=0.2))
    await asyncio.sleep(0.05)
    assert [k for k, _ in seen if k == "path"] and not [k for k, _ in seen if k == "closed"]
    assert replay.candles == 0  # the candle has not closed yet
    assert await job == 1
    assert [v for k, v in seen if k == "closed"] == [(s, seen[0][1][1]) for s in SYMBOLS]
    assert replay.candles == 1
