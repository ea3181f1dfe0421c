"""``KlineFeed``'s guarantees on its frame path: closed candles in order, no duplicates, gaps
backfilled, forming candles never delivered, every frame updating the latest price.

REST here is a recorded list of kline rows (the feed's ``fetch`` callable); the same feed over a
real simulator is exercised in ``test_faults_streams.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from perpbot.exchange.binance.codec.market import kline_event, kline_row
from perpbot.exchange.binance.environment import resolve_endpoints
from perpbot.exchange.binance.market_stream import BAR_MS, Candle, KlineFeed

T0 = 1_736_294_400_000
NOW = T0 + 10 * BAR_MS + 60_000  # candle 10 is forming


def rows(n: int) -> list[list[Any]]:
    return [kline_row(T0 + i * BAR_MS, 1.0 + i, 2.0 + i, 0.5, 1.5 + i, 100.0, BAR_MS) for i in range(n)]


class Rest:
    def __init__(self, data: list[list[Any]]) -> None:
        self.data = data
        self.calls: list[tuple[int | None, int]] = []

    async def fetch(self, symbol: str, start: int | None, limit: int) -> list[list[Any]]:
        self.calls.append((start, limit))
        if start is None:
            return self.data[-limit:]
        return [r for r in self.data if r[0] >= start][:limit]


def frame(i: int, closed: bool = True, close: float | None = None) -> dict[str, Any]:
    c = 1.5 + i if close is None else close
    ev = kline_event(
        "XRPUSDT",
        "15m",
        T0 + i * BAR_MS + 1,
        T0 + i * BAR_MS,
        (1.0 + i, 2.0 + i, 0.5, c, 100.0),
        closed,
        BAR_MS,
    )
    return {"stream": "xrpusdt@kline_15m", "data": ev}


@pytest.fixture
def feed() -> tuple[KlineFeed, Rest, list[Candle]]:
    rest = Rest(rows(11))
    got: list[Candle] = []

    async def on_candle(c: Candle) -> None:
        got.append(c)

    f = KlineFeed(
        resolve_endpoints("live"), ["XRPUSDT"], rest.fetch, on_candle, server_ms=lambda: NOW, preload=5
    )
    return f, rest, got


async def test_preload_drops_the_forming_candle(feed: tuple[KlineFeed, Rest, list[Candle]]) -> None:
    f, rest, _ = feed
    hist = (await f.preload())["XRPUSDT"]
    assert [c.open_ms for c in hist] == [T0 + i * BAR_MS for i in range(5, 10)]
    assert rest.calls == [(None, 6)] and f.last_open["XRPUSDT"] == T0 + 9 * BAR_MS


async def test_duplicates_and_open_candles_are_not_delivered(
    feed: tuple[KlineFeed, Rest, list[Candle]],
) -> None:
    f, _, got = feed
    await f.preload()
    await f._on_frame(frame(10, closed=False, close=9.0))
    assert got == [] and f.latest["XRPUSDT"][0] == 9.0
    await f._on_frame(frame(10))
    await f._on_frame(frame(10))  # Binance may resend a closed kline
    await f._on_frame(frame(9))  # older than the last delivered one
    assert [c.open_ms for c in got] == [T0 + 10 * BAR_MS] and f.duplicates == 2
    assert got[0] == Candle("XRPUSDT", T0 + 10 * BAR_MS, 11.0, 12.0, 0.5, 11.5, 100.0)


async def test_a_gap_is_backfilled_over_rest_before_the_new_candle(
    feed: tuple[KlineFeed, Rest, list[Candle]],
) -> None:
    f, rest, got = feed
    await f.preload()
    f.last_open["XRPUSDT"] = T0 + 6 * BAR_MS  # candles 7..9 were never seen
    await f._on_frame(frame(10))
    assert [c.open_ms for c in got] == [T0 + i * BAR_MS for i in (7, 8, 9, 10)]
    assert f.backfilled == 3 and rest.calls[-1] == (T0 + 7 * BAR_MS, 1000)


async def test_reconnect_backfill_stops_at_the_forming_candle(
    feed: tuple[KlineFeed, Rest, list[Candle]],
) -> None:
    f, _, got = feed
    await f.preload()
    f.last_open["XRPUSDT"] = T0 + 7 * BAR_MS
    await f._backfill_all()
    assert [c.open_ms for c in got] == [T0 + 8 * BAR_MS, T0 + 9 * BAR_MS]  # 10 is still forming


async def test_error_payload_is_a_disconnect(feed: tuple[KlineFeed, Rest, list[Candle]]) -> None:
    f, _, _ = feed
    with pytest.raises(ConnectionError):
        await f._on_frame({"e": "error", "m": "bad"})
