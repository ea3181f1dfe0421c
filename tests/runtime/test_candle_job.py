"""The decision path of one candle (``runtime.candle_job``): which reads start when, and what the
bot is handed. A fake runtime around a real ``MarketWindow``; the exchange and bot record calls."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np

from perpbot.config import load_config
from perpbot.data.synth import synth_market
from perpbot.engine.clock import SimClock
from perpbot.ml.features import build_feature_frame
from perpbot.runtime.candle_job import handle_candle
from perpbot.runtime.window import MarketWindow
from tests.runtime.test_window import _candles
from tests.support.ml import LOOSE_ENV

SYM = "XRPUSDT"


class Venue:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def open_interest(self, symbol: str) -> float:
        self.calls.append("open_interest")
        return 1000.0

    async def funding_rate(self, symbol: str) -> float:
        self.calls.append("funding_rate")
        return 1e-4

    async def position(self, symbol: str) -> None:
        self.calls.append("position")

    def prefetch_balance(self) -> None:
        self.calls.append("prefetch_balance")


class Bot:
    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.kill_switch = SimpleNamespace(tripped=False)
        self.handed: list[Any] = []
        self.calls_at_decision: list[str] = []

    async def on_candle(self, ctx: Any, position: Any = None) -> None:
        self.calls_at_decision = list(self.venue.calls)
        self.handed.append(position)
        if position is not None:
            await position


def _runtime(align_wait_s: float, upto: int, with_correlation: bool) -> tuple[Any, Venue, Bot, int]:
    cfg = load_config({**LOOSE_ENV, "SYMBOLS": SYM}, env_file=None)
    market = synth_market(days=14, seed=3, symbol=SYM)
    w = MarketWindow(cfg, align_wait_s=align_wait_s)
    w.preload(SYM, _candles(market.iloc[: upto + 1], SYM))
    last = 1 if with_correlation else 0  # without: BTC/ETH stop one candle short
    w.preload("BTCUSDT", _candles(market.iloc[: upto + last], "BTCUSDT", "_btc"))
    w.preload("ETHUSDT", _candles(market.iloc[: upto + last], "ETHUSDT", "_eth"))
    venue = Venue()
    bot = Bot(venue)
    rt = SimpleNamespace(
        exchange=venue,
        window=w,
        bots={SYM: bot},
        prev_oi={},
        candles_handled={SYM: 0},
        last_candle_wall={},
        signals={SYM: 0},
        clock=SimClock(0),
        view=None,
    )
    open_ms = int(market.index[upto].value // 1_000_000)
    return rt, venue, bot, open_ms


def _signal_rows() -> tuple[int, int]:
    cfg = load_config({**LOOSE_ENV, "SYMBOLS": SYM}, env_file=None)
    market = synth_market(days=14, seed=3, symbol=SYM)
    sig = build_feature_frame(market, cfg.params_for(SYM))["signal"].to_numpy()
    rows = np.arange(len(sig))
    with_signal = int(rows[(sig != 0) & (rows > 1100)][0])
    hold = int(rows[(sig == 0) & (rows > 1100)][0])
    return with_signal, hold


async def test_a_signal_starts_the_position_and_balance_reads_and_hands_the_read_to_the_bot() -> None:
    with_signal, hold = _signal_rows()
    rt, venue, bot, open_ms = _runtime(5.0, with_signal, with_correlation=True)
    await handle_candle(rt, SYM, open_ms)
    assert venue.calls[:2] == ["open_interest", "funding_rate"]  # sent before any computation
    assert set(venue.calls) == {"open_interest", "funding_rate", "position", "prefetch_balance"}
    assert bot.handed and bot.handed[0] is not None and rt.candles_handled[SYM] == 1
    # A HOLD candle reads OI and funding only, as before.
    rt, venue, bot, open_ms = _runtime(5.0, hold, with_correlation=True)
    await handle_candle(rt, SYM, open_ms)
    assert venue.calls == ["open_interest", "funding_rate"] and rt.signals[SYM] == 0


async def test_a_position_read_grown_old_while_waiting_for_btc_eth_is_not_handed_over() -> None:
    # BTC/ETH of this open time never come: the aligner gives up after 1.2 s, more than the
    # 1 s a handed-over read may have aged; the bot then reads the position itself.
    with_signal, _ = _signal_rows()
    rt, venue, bot, open_ms = _runtime(1.2, with_signal, with_correlation=False)
    await handle_candle(rt, SYM, open_ms)
    assert "position" in venue.calls and bot.handed == [None]
    assert rt.window.align_timeouts == 1
    await asyncio.sleep(0)
