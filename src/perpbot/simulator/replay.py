"""The replay clock: one candle at a time, in the order Binance would show it.

Per candle (one open time, every symbol that has a bar there): for each symbol, the market
stream first gets the intra-candle kline updates (``x: false``) along the very path the engine
will walk to trigger orders (``MatchingEngine.intrabar_path``); then the engine processes the bar
(funding, triggers, liquidation) and the user-data stream gets those events; once every symbol's
bar is processed, the closed klines (``x: true``) go out together. On Binance a stop that
triggers during the 15 minutes is streamed when the price crosses it, before the candle closes,
and every symbol's candle closes at the same moment: a client that reacts to the close finds the
bar's fills already delivered (and the venue's state already showing them), not arriving behind
the closed kline as if they had happened after it.
Market time is replay time; the wall clock only paces the replay (``--speed`` candles per second).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from perpbot.aio import STOP_WAIT_S, cancel_and_wait
from perpbot.data.schema import BAR_MS
from perpbot.simulator.venue import Venue

# (symbol, open ms, path (open, first extreme, second extreme, close), volume, venue ms)
KlineSink = Callable[[str, int, tuple[float, float, float, float], float, int], None]
# A played candle's closes still to report: (symbol, path, volume) per symbol that had a bar.
Closing = list[tuple[str, tuple[float, float, float, float], float]]


@dataclass
class Replay:
    """Advances ``venue`` bar by bar; ``path_sinks`` get each candle before its bar is processed
    (the intra-candle updates), ``kline_sinks`` once every symbol's bar was (the closed klines)."""

    venue: Venue
    speed: float
    kline_sinks: list[KlineSink] = field(default_factory=list)
    path_sinks: list[KlineSink] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    candles: int = 0
    cursor_ms: int = -1  # open time of the next candle to happen
    _advancing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.cursor_ms < 0:
            self.cursor_ms = self.venue.market.start_ms

    @property
    def next_open_ms(self) -> int:
        return self.cursor_ms

    @property
    def finished(self) -> bool:
        return self.next_open_ms >= self.venue.market.end_ms

    def advance(self, bars: int = 1) -> int:
        """Let up to ``bars`` candles happen; returns how many did (0 at the end of the data)."""
        done = 0
        while done < bars and not self.finished:
            self._close(*self._play())
            done += 1
        return done

    def _play(self) -> tuple[int, Closing]:
        """The next candle up to its close: each symbol's path updates, its bar processed, its
        events out. Returns its open time and what ``_close`` reports."""
        v = self.venue
        engine = v.engine
        t = self.next_open_ms
        closing: Closing = []
        for sym, series in v.market.series.items():
            i = series.index_at(t)
            if i < 0:
                continue
            ei = i - v.offsets[sym]
            path = engine.intrabar_path(sym, ei)
            vol = float(series.volume[i])
            for sink in self.path_sinks:
                sink(sym, t, path, vol, v.now_ms)
            engine.process_bar(sym, ei)
            v.publish()
            closing.append((sym, path, vol))
        return t, closing

    def _close(self, t: int, closing: Closing) -> None:
        """The candle's closed klines, every symbol's together, once its fills are out."""
        for sym, path, vol in closing:
            for sink in self.kline_sinks:
                sink(sym, t, path, vol, self.venue.now_ms)
        self.cursor_ms = t + BAR_MS  # a gap in every file is skipped like a quiet candle
        self.candles += 1

    async def advance_async(self, bars: int, chunk: int = 16, close_gap_s: float = 0.0) -> int:
        """``advance`` in chunks, yielding to the event loop between them so that stream writers
        keep flushing (a month in one call must not pile every frame up in the send queues).

        ``close_gap_s`` > 0: each candle's closed klines go out that long after its fills, with
        the loop free meanwhile. An instant replay otherwise hands a client a candle's stop fills
        and its closes in the same moment, where live the fills come during the 15 minutes; a
        harness that times what a client does at the close (``bench/bench_runtime.py``) asks for
        the gap so that its figures are not those of a stop hit in the last millisecond."""
        async with self._advancing:  # one candle closes before the next one plays
            done = 0
            while done < bars and not self.finished:
                t, closing = self._play()
                if close_gap_s > 0:
                    await asyncio.sleep(close_gap_s)
                self._close(t, closing)
                done += 1
                if done % chunk == 0:
                    await asyncio.sleep(0)
            if done % chunk:
                await asyncio.sleep(0)  # the last chunk's frames flush before the caller goes on
            return done

    def start(self) -> None:
        """Start pacing by wall time (no-op at speed 0)."""
        if self.speed > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-replay")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.speed
        next_at = loop.time()
        while not self.finished:
            self.advance(1)
            next_at += period
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = loop.time()
                await asyncio.sleep(0)  # let the streams and REST handlers run

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task, STOP_WAIT_S)
