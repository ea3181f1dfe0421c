"""One closed candle of a traded symbol, from the kline to ``on_candle``: the decision path.

Why a module of its own: this is the latency-critical order of work (docs/ARCHITECTURE.md,
"Decision latency"); ``Runtime`` (``app.py``) owns the pieces, this function only sequences them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from perpbot import latency
from perpbot.engine.notifier import info_message
from perpbot.runtime import gc_quiet
from perpbot.runtime.lane import BOOKKEEPING, BOOKKEEPING_WAIT_MAX_S, DECIDE, ROUTINE, Lane
from perpbot.runtime.window import Micro, oi_change

if TYPE_CHECKING:
    from perpbot.runtime.app import Runtime

log = logging.getLogger("perpbot.runtime.app")

# A position read started longer ago than this (a late BTC/ETH candle, a slow OI read) is not
# handed to the bot: it reads the position afresh, as without the head start. One during which the
# bot's state changed (a close or a fill handled from the user stream meanwhile) may predate it (a
# stale "open" made the bot adopt a position it had just closed): it is handed over with the state
# it started from, and the bot reads again unless both say flat (``SymbolBot._on_signal``).
POSITION_READ_MAX_AGE_S = 1.0
T = TypeVar("T")


async def handle_candle(rt: Runtime, sym: str, open_ms: int) -> None:
    """One closed candle, ordered so that the order leaves as early as possible without
    changing what is decided (docs/ARCHITECTURE.md, "Decision latency"):
    1. the indicators and rule signal, which read the primary's candles only, are computed
       first (before the BTC/ETH wait, if any);
    2. with a signal, the live position read of SPEC §8.3 step 7 starts, and so does the
       balance read of the entry (kept only while provably current, ``wallet.py``); a HOLD
       candle reads nothing more, as before; the position read is handed to the bot, which
       awaits it at step 7;
    3. the close's OI and funding reads (SPEC §2.3, concurrently, before the risk gate). When
       an ML filter is configured they are decision inputs: they start first of all and the row
       waits for them. Without one nothing in the decision reads them: a signal candle sends
       them once ``on_candle`` returned (the context's four OI/funding features are NaN, not
       computed), both it and a HOLD candle once no other symbol's decision is open
       (``Lane.after_decisions``; a HOLD looks again once back in the lane), and their
       answers are booked as before (stored previous OI, the candle's row in the window),
       before the symbol's next candle;
    4. after the BTC/ETH wait, the rest of the features (z-scores) is computed while the reads
       are in flight (a HOLD candle's, again, after the open decisions); then ``on_candle``.
    A candle that is no longer the symbol's newest (the stream's backfill after an outage
    delivers the missed candles together) is handed to the bot as a HOLD (``_stale``).
    The CPU of all this runs in the runtime's lane (``lane.py``): one job at a time, a candle
    with a signal before the rest of a HOLD candle, out of the lane while waiting for I/O."""
    probe = latency.PROBE  # bench/bench_runtime.py only
    if probe is not None:
        probe.begin(sym, open_ms)
        probe.stage(sym, open_ms, "job")
    micro_decides = rt.micro_decides.get(sym, True)  # unknown: as if a model read them
    turn = _Turn(rt.lane)
    oi: asyncio.Future[Any] | None = None
    funding: asyncio.Future[Any] | None = None
    position: asyncio.Future[Any] | None = None
    position_at = 0.0
    position_state: Any = None  # the bot's state when the read started
    deciding = False
    quiet = gc_quiet.hold()  # no collection pause until the signal is a HOLD or decided
    try:
        await turn.take(ROUTINE)
        if micro_decides:
            oi, funding = _micro_reads(rt, sym)
            await asyncio.sleep(0)  # a task runs only when we yield: let the requests leave first
        # The rule signal reads the primary's candles only: known before BTC/ETH arrive.
        prep = rt.window.prepare(sym, upto_open_ms=open_ms)
        if probe is not None:
            probe.stage(sym, open_ms, "signal")
        signal = prep is not None and prep.signal is not None and not _superseded(rt, sym, open_ms)
        if signal:
            rt.lane.open_decision()  # the others' bookkeeping waits for this decision
            deciding = True
            position_state = rt.bots[sym].state
            position = asyncio.ensure_future(rt.exchange.position(sym))
            position_at = time.monotonic()
            prefetch = getattr(rt.exchange, "prefetch_balance", None)
            if prefetch is not None:
                prefetch()  # the entry's balance (SPEC §8.4 step 1), reused only if unchanged
        urgency = DECIDE if signal else BOOKKEEPING
        if not signal:
            quiet()
            # A HOLD's reads and features: after every open decision, and after the candles
            # of other symbols whose signal is not known yet (they may be decisions).
            await asyncio.sleep(0)
            await _after_decisions(turn, rt.lane, urgency)
            if oi is None:
                oi, funding = _micro_reads(rt, sym)
        await asyncio.sleep(0)  # the requests leave
        aligned = True
        if not rt.window.is_aligned(open_ms):
            aligned = await turn.wait(rt.window.align(open_ms), urgency)
        if not aligned:
            log.warning("%s: candle %d handled without BTC/ETH of the same open time", sym, open_ms)
        if probe is not None:
            probe.stage(sym, open_ms, "aligned")
        if not signal:  # the z-scores of a HOLD: a decision found meanwhile goes first
            await _after_decisions(turn, rt.lane, urgency)
        if prep is not None:
            rt.window.features(prep)
        if probe is not None:
            probe.stage(sym, open_ms, "features")
        if micro_decides:
            assert funding is not None
            micro = await turn.wait(_micro(rt, sym, oi, funding), urgency)
            if probe is not None:
                probe.stage(sym, open_ms, "inputs")
            rt.window.set_micro(sym, open_ms, micro)
            ctx = None if prep is None else rt.window.finish(prep, micro)
        else:
            ctx = None if prep is None else rt.window.finish(prep, with_micro=False)
        turn.give()
        rt.candles_handled[sym] += 1
        rt.last_candle_wall[sym] = time.monotonic()
        if ctx is not None and ctx.signal is not None and _superseded(rt, sym, open_ms):
            ctx = _stale(sym, open_ms, ctx)
        if ctx is not None:
            await _decide(rt, sym, open_ms, ctx, position, position_at, position_state)
            position = None  # handed over (or dropped as too old)
        if deciding:
            deciding = False
            rt.lane.close_decision()
        quiet()
        if oi is None:  # a signal candle without an ML filter: its bookkeeping reads, now,
            await rt.lane.after_decisions()  # or once another symbol's decision is over
            oi, funding = _micro_reads(rt, sym)
        if not micro_decides:
            assert funding is not None
            # SPEC §2.3's bookkeeping, after the decision that did not need it: the stored
            # previous OI and this candle's row evolve exactly as when the row waited for them.
            rt.window.set_micro(sym, open_ms, await _micro(rt, sym, oi, funding))
    finally:
        if deciding:
            rt.lane.close_decision()
        quiet()
        turn.give()
        for fut in (oi, funding, position):
            _discard(fut)


async def _decide(
    rt: Runtime,
    sym: str,
    open_ms: int,
    ctx: Any,
    position: asyncio.Future[Any] | None,
    position_at: float,
    position_state: Any = None,
) -> None:
    """``on_candle`` with the position read started by the job (when still young enough), and
    the bot's state when it started."""
    bot = rt.bots[sym]
    if ctx.signal is not None:
        rt.signals[sym] += 1
    # An operator's ``perpbot kill-switch reset`` (written by another process) is taken here.
    if bot.kill_switch.tripped and bot.kill_switch.take_operator_reset(rt.clock.now_ms()):
        await rt.alert("info", info_message(f"[{sym}] kill switch reset by the operator"))
    if rt.view is not None:
        rt.view.on_candle(sym, ctx)
    if position is not None and time.monotonic() - position_at > POSITION_READ_MAX_AGE_S:
        _discard(position)
        position = None  # too old a snapshot to decide on: the bot reads it again
    probe = latency.PROBE
    if probe is not None:
        probe.stage(sym, open_ms, "decide")
    try:
        await bot.on_candle(ctx, position=position, read_since=None if position is None else position_state)
    finally:
        _discard(position)
    if probe is not None:
        probe.end(sym, open_ms)


def _superseded(rt: Runtime, sym: str, open_ms: int) -> bool:
    """A newer closed candle of ``sym`` is already in the window."""
    newest = rt.window.last_open(sym)
    return newest is not None and newest > open_ms


def _stale(sym: str, open_ms: int, ctx: Any) -> Any:
    """The candle's context without its signal. After a market-stream outage the feed backfills
    every missed candle at once; deciding each of them would enter or reverse on signals up to
    hours old, at today's price, sized and stopped from an old close, possibly flipping several
    times in a row. Only the newest candle is decided; the older ones still update the window,
    the features' history and the bot's per-candle bookkeeping. (Paper never hands over such a
    candle: its driver submits the current one only.)"""
    log.warning(
        "%s: candle %d is not the newest held (a backfill after a stream outage): its %s signal "
        "is not acted on",
        sym,
        open_ms,
        ctx.signal.value,
    )
    return replace(ctx, signal=None)


def _micro_reads(rt: Runtime, sym: str) -> tuple[asyncio.Future[Any], asyncio.Future[Any]]:
    """SPEC §2.3: the close's OI and funding reads, concurrently."""
    return asyncio.ensure_future(rt.exchange.open_interest(sym)), asyncio.ensure_future(
        rt.exchange.funding_rate(sym)
    )


class _Turn:
    """A job's hold on the runtime's lane: given up while it waits for something outside."""

    def __init__(self, lane: Lane) -> None:
        self.lane = lane
        self.holding = False

    async def take(self, priority: int) -> None:
        await self.lane.acquire(priority)
        self.holding = True

    def give(self) -> None:
        if self.holding:
            self.holding = False
            self.lane.release()

    async def wait(self, what: Awaitable[T] | None, priority: int) -> T | None:
        """Out of the lane while ``what`` is awaited (None: just let a more urgent job go
        first), then back in at ``priority``."""
        self.give()
        result = None if what is None else await what
        await self.take(priority)
        return result


async def _after_decisions(turn: _Turn, lane: Lane, priority: int) -> None:
    """Back in the lane once no decision is open (bounded by ``BOOKKEEPING_WAIT_MAX_S`` in all).

    Checked again once the lane is ours: while this job waited for the lane itself, a candle
    whose signal was not known yet (``ROUTINE``, ahead of bookkeeping) may have found one and
    opened its decision. Without the second look, a HOLD candle's OI/funding requests left in
    half of the 3-symbol benchmark's entry windows, behind the decision's position read at the
    venue and ahead of its answer in the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOOKKEEPING_WAIT_MAX_S
    while True:
        await turn.wait(lane.after_decisions(max(0.0, deadline - loop.time())), priority)
        if not lane.deciding or loop.time() >= deadline:
            return


async def _micro(rt: Runtime, sym: str, oi_read: Awaitable[Any], funding_read: Awaitable[Any]) -> Micro:
    """SPEC §2.3: OI and funding fetched concurrently (both started by the caller);
    failures become 0.0."""
    oi, funding = await asyncio.gather(oi_read, funding_read, return_exceptions=True)
    change = 0.0
    if isinstance(oi, int | float) and oi > 0:
        change = oi_change(rt.prev_oi.get(sym, 0.0), float(oi))
        rt.prev_oi[sym] = float(oi)
    rate = float(funding) if isinstance(funding, int | float) else 0.0
    return Micro(oi_change=change, funding_rate=rate)


def _discard(fut: asyncio.Future[Any] | None) -> None:
    """A read nobody awaited (a HOLD after all, an error on the way): cancelled, or its outcome
    taken so that asyncio does not report an exception that was never retrieved."""
    if fut is None:
        return
    if not fut.done():
        fut.cancel()
    elif not fut.cancelled():
        fut.exception()
