"""The decision path of one candle (``runtime.candle_job``): which reads start when, and what the
bot is handed. A fake runtime around a real ``MarketWindow``; the exchange and bot record calls."""

from __future__ import annotations

import asyncio
import gc
from types import SimpleNamespace
from typing import Any

import numpy as np

from perpbot.config import load_config
from perpbot.data.synth import synth_market
from perpbot.engine.clock import SimClock
from perpbot.ml.features import build_feature_frame
from perpbot.runtime.candle_job import handle_candle
from perpbot.runtime.lane import Lane
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
        self.state = "flat"  # handed over with the read: what the bot was when it started
        self.handed: list[Any] = []
        self.calls_at_decision: list[str] = []

    async def on_candle(self, ctx: Any, position: Any = None, read_since: Any = None) -> None:
        self.calls_at_decision = list(self.venue.calls)
        self.read_since = read_since
        self.handed.append(position)
        if position is not None:
            await position


def _runtime(
    align_wait_s: float, upto: int, with_correlation: bool, *, micro_decides: bool = True
) -> tuple[Any, Venue, Bot, int]:
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
        micro_decides={SYM: micro_decides},
        lane=Lane(),
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
    assert bot.read_since == "flat"
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


class SlowOiVenue(Venue):
    """The OI answers wait for ``release``; the values come from ``oi_values`` in turn."""

    def __init__(self, oi_values: list[float]) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.oi_values = list(oi_values)

    async def open_interest(self, symbol: str) -> float:
        self.calls.append("open_interest")
        await self.release.wait()
        return self.oi_values.pop(0)


class RecordingBot(Bot):
    def __init__(self, venue: Venue) -> None:
        super().__init__(venue)
        self.contexts: list[Any] = []

    async def on_candle(self, ctx: Any, position: Any = None, read_since: Any = None) -> None:
        self.contexts.append(ctx)
        await super().on_candle(ctx, position, read_since)


def _with(rt: Any, venue: Venue) -> RecordingBot:
    bot = RecordingBot(venue)
    rt.exchange, rt.bots = venue, {SYM: bot}
    return bot


def _signal_job(micro_decides: bool) -> tuple[Any, SlowOiVenue, RecordingBot, asyncio.Task[None]]:
    """A signal candle's job running against a venue whose OI answer waits for ``release``."""
    with_signal, _ = _signal_rows()
    rt, _, _, open_ms = _runtime(5.0, with_signal, with_correlation=True, micro_decides=micro_decides)
    venue = SlowOiVenue([1000.0])
    bot = _with(rt, venue)
    return rt, venue, bot, asyncio.create_task(handle_candle(rt, SYM, open_ms))


async def test_without_an_ml_filter_the_decision_does_not_wait_for_the_oi_answer() -> None:
    rt, venue, bot, job = _signal_job(micro_decides=False)
    for _ in range(200):
        if bot.contexts:
            break
        await asyncio.sleep(0.005)
    # Decided (position read handed over) while the OI answer is still out …
    assert bot.contexts and bot.handed[0] is not None and not venue.release.is_set()
    # … with only the safety reads out: the OI/funding requests leave after the decision.
    assert bot.calls_at_decision == ["prefetch_balance", "position"]
    assert venue.calls[2:] == ["open_interest", "funding_rate"]
    # The four OI/funding features were not computed (nothing reads them without a model).
    row = bot.contexts[0].features
    assert np.isnan(row[_micro_columns()]).all()
    assert not job.done()  # the booking waits for the answer, not the decision
    venue.release.set()
    await asyncio.wait_for(job, 2.0)
    assert rt.prev_oi[SYM] == 1000.0


def _micro_columns() -> list[int]:
    from perpbot.ml.features import FEATURE_COLS, OPTIONAL_FEATURES

    return [FEATURE_COLS.index(c) for c in OPTIONAL_FEATURES]


async def test_the_oi_history_evolves_the_same_with_or_without_waiting_for_it() -> None:
    # Two successive candles (a signal one and the next), OI 1000 then 1100: the stored previous
    # OI and both candles' rows in the window are the same whether the decision waited (ML
    # filter configured) or booked the answers after it (none).
    with_signal, _ = _signal_rows()
    results = []
    for micro_decides in (True, False):
        rt, _, _, _ = _runtime(5.0, with_signal + 1, with_correlation=True, micro_decides=micro_decides)
        venue = SlowOiVenue([1000.0, 1100.0])
        venue.release.set()
        bot = _with(rt, venue)
        opens = rt.window.held_opens(SYM)[-2:]
        for open_ms in opens:
            await handle_candle(rt, SYM, open_ms)
        frame = rt.window.frame(SYM)
        results.append((rt.prev_oi[SYM], frame[["oi_change", "funding_rate"]].tail(3).to_numpy()))
        assert len(bot.contexts) == 2
    (prev_on, rows_on), (prev_off, rows_off) = results
    assert prev_on == prev_off == 1100.0
    np.testing.assert_array_equal(rows_on, rows_off)
    assert abs(rows_on[-1, 0] - 0.1) < 1e-12  # (1100 − 1000) / 1000


async def test_with_an_ml_filter_the_row_waits_for_the_oi_answer() -> None:
    _, venue, bot, job = _signal_job(micro_decides=True)
    await asyncio.sleep(0.2)
    assert not bot.contexts  # the model's inputs are not complete yet
    venue.release.set()
    await asyncio.wait_for(job, 2.0)
    assert bot.contexts and venue.calls[:2] == ["open_interest", "funding_rate"]


async def test_a_candle_already_followed_by_a_newer_one_is_handed_over_as_a_hold() -> None:
    # After a stream outage the backfill delivers the missed candles together: when an older
    # one's job runs, the window already holds a newer candle. Its signal is not acted on (no
    # position read, the bot gets a HOLD); the newest candle is decided as usual.
    with_signal, _ = _signal_rows()
    market = synth_market(days=14, seed=3, symbol=SYM)
    rt, venue, _, open_ms = _runtime(5.0, with_signal, with_correlation=True)
    bot = _with(rt, venue)
    for c in _candles(market.iloc[with_signal + 1 : with_signal + 2], SYM):
        await rt.window.add(c)
    await handle_candle(rt, SYM, open_ms)
    assert [c.signal for c in bot.contexts] == [None] and bot.handed == [None]
    assert "position" not in venue.calls and rt.signals[SYM] == 0 and rt.candles_handled[SYM] == 1
    # Control: the same candle as the newest one is decided with its signal.
    rt, venue, _, open_ms = _runtime(5.0, with_signal, with_correlation=True)
    bot = _with(rt, venue)
    await handle_candle(rt, SYM, open_ms)
    assert bot.contexts[0].signal is not None and "position" in venue.calls and rt.signals[SYM] == 1


async def test_a_hold_candle_sends_its_reads_only_once_no_other_decision_is_open() -> None:
    # Another symbol found a signal and is deciding (its position read out): a HOLD candle's
    # bookkeeping requests would queue at the venue before that read's answer, and its z-scores
    # would hold the loop when the answer comes. They wait until the decision is over.
    _, hold = _signal_rows()
    rt, venue, _bot, open_ms = _runtime(5.0, hold, with_correlation=True, micro_decides=False)
    rt.lane.open_decision()
    job = asyncio.create_task(handle_candle(rt, SYM, open_ms))
    await asyncio.sleep(0.1)
    assert venue.calls == [] and rt.candles_handled[SYM] == 0
    rt.lane.close_decision()
    await asyncio.wait_for(job, 2.0)
    assert venue.calls == ["open_interest", "funding_rate"] and rt.candles_handled[SYM] == 1


async def test_a_decision_opened_while_the_hold_candle_waited_for_the_lane_still_goes_first() -> None:
    # The HOLD candle found no open decision, but by the time it had the lane back, another
    # symbol's candle (queued ahead of bookkeeping: its signal was not known yet) had found a
    # signal and opened its decision. The HOLD's requests still wait for that decision.
    from perpbot.runtime.lane import ROUTINE

    _, hold = _signal_rows()
    rt, venue, _bot, open_ms = _runtime(5.0, hold, with_correlation=True, micro_decides=False)
    rt.lane.open_decision()  # a first decision: the HOLD job waits for it out of the lane
    job = asyncio.create_task(handle_candle(rt, SYM, open_ms))
    await asyncio.sleep(0.05)
    await rt.lane.acquire(ROUTINE)  # another symbol's candle computes its signal
    rt.lane.close_decision()  # the first decision ends: the HOLD job queues for the lane
    await asyncio.sleep(0.05)
    rt.lane.open_decision()  # … and that candle has a signal
    rt.lane.release()
    await asyncio.sleep(0.1)
    assert venue.calls == [] and not job.done()
    rt.lane.close_decision()
    await asyncio.wait_for(job, 2.0)
    assert venue.calls == ["open_interest", "funding_rate"] and rt.candles_handled[SYM] == 1


class GcVenue(Venue):
    """Records, per request, whether the cyclic collector could run then."""

    def __init__(self) -> None:
        super().__init__()
        self.collector: dict[str, bool] = {}

    async def open_interest(self, symbol: str) -> float:
        self.collector["open_interest"] = gc.isenabled()
        return await super().open_interest(symbol)

    async def position(self, symbol: str) -> None:
        self.collector["position"] = gc.isenabled()


async def test_no_collection_runs_inside_a_decision_and_it_is_back_on_after() -> None:
    with_signal, hold = _signal_rows()
    gc.enable()
    rt, _venue, bot, open_ms = _runtime(5.0, with_signal, with_correlation=True, micro_decides=False)
    rt.exchange = venue = GcVenue()
    at_decision: list[bool] = []
    decide = bot.on_candle

    async def on_candle(ctx: Any, position: Any = None, read_since: Any = None) -> None:
        at_decision.append(gc.isenabled())
        await decide(ctx, position, read_since)

    bot.on_candle = on_candle  # type: ignore[method-assign]
    await handle_candle(rt, SYM, open_ms)
    assert venue.collector == {"position": False, "open_interest": True}  # OI: after the decision
    assert at_decision == [False] and gc.isenabled()
    # A HOLD candle: back on once its signal is known, for its bookkeeping reads.
    rt, _venue, _bot, open_ms = _runtime(5.0, hold, with_correlation=True, micro_decides=False)
    rt.exchange = venue = GcVenue()
    await handle_candle(rt, SYM, open_ms)
    assert venue.collector == {"open_interest": True} and gc.isenabled()
