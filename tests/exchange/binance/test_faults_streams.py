"""Stream faults injected by ``perpbot simulate``: dropped and silent streams, an expired key."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import OrderSide
from perpbot.exchange.binance.market_stream import BAR_MS, Candle
from perpbot.exchange.binance.ws import StreamSettings

Start = Callable[..., Any]
FAST = StreamSettings(silence_s=600.0, backoff_s=0.05, backoff_max_s=0.3)
# Reconnects no sooner than 0.25 s: the order placed right after the fault happens while deaf.
SLOW = StreamSettings(silence_s=600.0, backoff_s=0.5, backoff_max_s=0.5)


def _contiguous(candles: list[Candle], symbol: str) -> list[int]:
    opens = [c.open_ms for c in candles if c.symbol == symbol]
    assert opens == sorted(set(opens)), "duplicates or out of order"
    assert all(b - a == BAR_MS for a, b in itertools.pairwise(opens)), "a gap"
    return opens


async def _wait(pred: Callable[[], bool], timeout_s: float = 8.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_dropped_market_stream_reconnects_and_backfills_over_rest(start_venue: Start) -> None:
    v = await start_venue()
    got: list[Candle] = []

    async def on_candle(c: Candle) -> None:
        got.append(c)

    feed = v.ex.kline_feed(["XRPUSDT", "TRXUSDT"], on_candle, FAST, preload=20)
    history = await feed.preload()
    assert len(history["XRPUSDT"]) == 20  # closed candles only, the newest last
    feed.start()
    try:
        await feed.socket.connected.wait()
        await v.advance(2)
        await _wait(lambda: len(got) == 4)
        await v.inject({"kind": "drop_connection", "stream": "market"})
        await v.control("POST", "/sim/advance?bars=3")  # while the feed is deaf
        await _wait(lambda: len(got) == 10)
        assert feed.socket.connects >= 2 and feed.backfilled >= 1
        await v.advance(1)
        await _wait(lambda: len(got) == 12)
    finally:
        await feed.stop()
    assert len(_contiguous([*history["XRPUSDT"], *got], "XRPUSDT")) == 26
    assert len(_contiguous([*history["TRXUSDT"], *got], "TRXUSDT")) == 26
    assert feed.latest["XRPUSDT"][0] == got[-1].close or feed.latest["TRXUSDT"][0] == got[-1].close


async def test_silent_market_stream_trips_the_watchdog_within_its_limit(start_venue: Start) -> None:
    v = await start_venue("--speed", "20")
    got: list[Candle] = []

    async def on_candle(c: Candle) -> None:
        got.append(c)

    silence = 0.5
    feed = v.ex.kline_feed(
        ["XRPUSDT"], on_candle, StreamSettings(silence_s=silence, backoff_s=0.05), preload=5
    )
    history = await feed.preload()
    feed.start()
    try:
        await _wait(lambda: len(got) >= 3)
        await v.inject({"kind": "silent_stream", "stream": "market", "seconds": 1.5})
        t0 = time.monotonic()
        await _wait(lambda: feed.socket.watchdog_fires >= 1, timeout_s=3.0)
        assert time.monotonic() - t0 <= silence + 0.25 + 0.5  # limit + one frame period + slack
        n = len(got)
        await _wait(lambda: len(got) >= n + 40)  # the stream speaks again, the gap was backfilled
    finally:
        await feed.stop()
    _contiguous([*history["XRPUSDT"], *got], "XRPUSDT")
    assert feed.backfilled >= 1


async def test_dropped_private_stream_loses_no_execution(start_venue: Start) -> None:
    v = await start_venue(stream=SLOW)
    us = v.ex.user_stream
    assert us is not None
    await v.inject({"kind": "drop_connection", "stream": "private"})
    r = await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="deaf-1")  # while deaf
    await v.settle(
        lambda ev: any(
            isinstance(e, OrderTradeUpdate) and e.order_id == r.order_id and e.execution_type == "TRADE"
            for e in ev
        )
    )
    await _wait(lambda: us.socket.connects >= 2)
    out = await v.ex.market_order(
        "XRPUSDT", OrderSide.SELL, 100.0, reduce_only=True, client_order_id="deaf-2"
    )
    await v.settle(
        lambda ev: any(
            isinstance(e, OrderTradeUpdate) and e.order_id == out.order_id and e.execution_type == "TRADE"
            for e in ev
        )
    )
    trades = [e.trade_id for e in v.events if isinstance(e, OrderTradeUpdate) and e.execution_type == "TRADE"]
    assert sorted(trades) == sorted(f.trade_id for f in await v.ex.user_trades("XRPUSDT"))
    assert len(trades) == len(set(trades)) == 2
    assert us.recovered >= 1  # the execution that happened while deaf came from the REST resync


async def test_expired_listen_key_gets_a_new_key_and_no_event_is_lost(start_venue: Start) -> None:
    v = await start_venue(stream=SLOW)
    us = v.ex.user_stream
    assert us is not None
    old = us.listen_key
    await v.inject({"kind": "expire_listen_key"})
    r = await v.ex.market_order("TRXUSDT", OrderSide.BUY, 300.0, client_order_id="exp-1")
    await _wait(lambda: us.keys_taken >= 2 and us.socket.connected.is_set())
    assert us.listen_key != old
    await v.settle(
        lambda ev: any(
            isinstance(e, OrderTradeUpdate) and e.order_id == r.order_id and e.execution_type == "TRADE"
            for e in ev
        )
    )
    r2 = await v.ex.market_order("TRXUSDT", OrderSide.SELL, 300.0, reduce_only=True, client_order_id="exp-2")
    await v.settle(
        lambda ev: any(
            isinstance(e, OrderTradeUpdate) and e.order_id == r2.order_id and e.execution_type == "TRADE"
            for e in ev
        )
    )
    trades = [e.trade_id for e in v.events if isinstance(e, OrderTradeUpdate) and e.execution_type == "TRADE"]
    assert sorted(trades) == sorted(f.trade_id for f in await v.ex.user_trades("TRXUSDT"))
    assert len(trades) == len(set(trades)) == 2
    assert us.recovered >= 1  # the execution that happened while deaf came from the REST resync


async def test_trigger_while_deaf_is_recovered_as_algo_update_and_fill(start_venue: Start) -> None:
    from perpbot.domain.events import AlgoUpdate
    from perpbot.domain.types import AlgoStatus, OrderType

    v = await start_venue(stream=SLOW)
    us = v.ex.user_stream
    assert us is not None
    await v.ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="deaf-in")
    price = await v.price("XRPUSDT")
    tp = await v.ex.place_conditional(
        "XRPUSDT",
        OrderType.TAKE_PROFIT_MARKET,
        OrderSide.SELL,
        100.0,
        round(price * 1.003, 4),
        client_algo_id="deaf-tp",
    )
    await v.settle(lambda ev: any(isinstance(e, AlgoUpdate) and e.algo_id == tp.algo_id for e in ev))
    await v.inject({"kind": "drop_connection", "stream": "private"})
    await v.control("POST", "/sim/advance?bars=1")  # the take-profit fires while the stream is down
    assert await v.ex.position("XRPUSDT") is None
    await v.settle(
        lambda ev: any(
            isinstance(e, AlgoUpdate) and e.algo_id == tp.algo_id and e.status is AlgoStatus.FINISHED
            for e in ev
        )
    )
    fired = (await v.ex.get_conditional("XRPUSDT", algo_id=tp.algo_id)).triggered_order_id
    await v.settle(lambda ev: any(isinstance(e, OrderTradeUpdate) and e.order_id == fired for e in ev))
    fill = next(e for e in v.events if isinstance(e, OrderTradeUpdate) and e.order_id == fired)
    assert fill.reduce_only and fill.execution_type == "TRADE" and fill.realized_pnl > 0
    assert us.recovered >= 2


async def test_connection_is_renewed_before_the_24h_cut_without_losing_candles(start_venue: Start) -> None:
    v = await start_venue()
    got: list[Candle] = []

    async def on_candle(c: Candle) -> None:
        got.append(c)

    feed = v.ex.kline_feed(["XRPUSDT"], on_candle, StreamSettings(max_age_s=0.3, backoff_s=0.05), preload=3)
    history = await feed.preload()
    feed.start()
    try:
        await _wait(lambda: feed.socket.renewals >= 2)
        for _ in range(3):
            await v.advance(1)
            await asyncio.sleep(0.15)
        await _wait(lambda: len(got) == 3)
    finally:
        await feed.stop()
    assert feed.socket.failures == 0
    assert len(_contiguous([*history["XRPUSDT"], *got], "XRPUSDT")) == 6


async def test_no_closed_candle_by_close_plus_grace_forces_a_reconnect(start_venue: Start) -> None:
    v = await start_venue()

    async def on_candle(c: Candle) -> None:
        return None

    feed = v.ex.kline_feed(["XRPUSDT"], on_candle, FAST, preload=3, candle_grace_s=0.2)
    await feed.preload()
    last = feed.last_open["XRPUSDT"]
    feed.server_ms = lambda: last + 2 * BAR_MS + 1_000  # the next candle is overdue
    feed.start()
    try:
        await _wait(lambda: feed.socket.watchdog_fires >= 1 and feed.socket.connects >= 2)
    finally:
        await feed.stop()
