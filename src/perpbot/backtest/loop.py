"""The backtest's hot loop: one timeline of candle steps driven through the real bots and the
simulated exchange.

Why apart from ``runner``: the runner builds the run (inputs, exchange, bots) and summarises it;
this module is only the time-ordered loop, the part whose cost grows with the candles.

Time order (issue 3 §6). All symbols are aligned on ONE timeline: the union of their candle open
times inside the window (a symbol without a candle at a time simply has no step there). For each
open time ``T``, in order:

1. the clock is set to the candle's close time ``T + 15 min`` (the simulator stamps everything
   that happens inside the candle with that time, so the bots' journal and the risk manager's
   daily reset agree with the exchange's stamps);
2. every symbol with a candle at ``T`` (configured symbol order): ``engine.process_bar`` — the
   candle *happens* (funding, gaps, intra-bar SL/TP triggers, liquidation) — then the resulting
   events are delivered to the bots (``drain``);
3. every such symbol's bot sees its closed candle (``on_candle``); market orders it sends fill at
   the next candle's open; the events are delivered before time advances.

4. when at least ``RECONCILE_EVERY_MS`` (300 s) of simulated time passed since the last pass,
   every bot runs ``reconcile()`` (as the live runtime does every 5 min) and its events are
   delivered. Nothing happens on the simulated exchange between two candle closes, so the three
   passes a 15-minute step spans would see the same state: one pass per step stands for them.

So every symbol's candle for ``T`` is processed before any candle of ``T + 15 min``, and a bot
never sees a price before the exchange has let the candle happen.

Skip-ahead (``BacktestConfig.skip_ahead``, default on; ``backtest.agenda``): while every book is
quiet and every bot at rest, the loop jumps to the next step holding a signal or a symbol's last
candle; on the steps it runs, HOLD candles are not handed to the bots and at-rest bots of quiet
books are not reconciled. Those are exactly the no-ops of the stepped loop, so trades, journal and
metrics are the same (``docs/ARCHITECTURE.md``, "Skip-ahead"; ``tests/backtest/test_skip_ahead.py``).

Speed (target ≥ 30 000 candles/s through the real bot code): the per-candle work outside the bot
is a few list look-ups; contexts are built from pre-extracted Python lists (no numpy scalars, no
pandas in the loop); after the bars ``drain`` is awaited only when the engine produced events, and
after the candles it returns at once when nothing is queued (the bot's HOLD path makes no
exchange call), so a quiet candle costs no event-loop turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from perpbot.backtest.prepare import SymbolSeries, Timeline
from perpbot.data.schema import BAR_MS
from perpbot.domain.types import CloseReason

ProgressFn = Callable[[int, int], None]
"""``progress(candles_done, candles_total)``; called every few thousand candles and at the end."""

_PROGRESS_EVERY = 4096  # timeline steps between progress callbacks
RECONCILE_EVERY_MS = 300_000  # as the live runtime: every bot reconciles every 5 min (issue 7 #14)


async def drive(
    prepared: Sequence[SymbolSeries],
    timeline: Timeline,
    engine: Any,
    exchange: Any,
    clock: Any,
    bots: Sequence[Any],
    progress: ProgressFn | None,
    total_candles: int,
    blocked: list[int] | None = None,
    *,
    skip_ahead: bool = False,
) -> tuple[int, int, int, int, int]:
    """The hot loop (module docstring, "Time order"); returns (bot candles, signal candles,
    reconcile passes, steps skipped, candles skipped).

    ``skip_ahead`` (``backtest.agenda``): while every book is quiet and every bot at rest, jump
    to the next step with a signal or a last candle; on the steps it does run, a HOLD candle is
    not handed to the bot and an at-rest bot of a quiet book is not reconciled (both no-ops).

    With the skip-ahead, a step looks only at its *active* symbols: those awake (bot not at rest
    or book not quiet at the end of the previous step) and those the data wakes (a signal or a
    last candle). Every other symbol is asleep: its bar would not be processed, its HOLD candle
    not handed over, its bot not reconciled and it has no background work, and nothing another
    symbol does can wake it (orders and events are per symbol; the bots ignore other symbols'
    events). So the per-step work grows with what is happening, not with the number of symbols
    (issue 13, scale); the same bot code runs on the same steps as before."""
    from perpbot.backtest.agenda import build_agenda

    last_row = [s.n - 1 for s in prepared]
    # One byte per candle (0/1), indexed as fast as a list: a list of Python bools took eight
    # (a pointer each; 27 MiB for 100 symbol-years, issue 13).
    ready = [s.ready.astype(bool, copy=False).tobytes() for s in prepared]
    steps = timeline.steps
    open_times = timeline.open_time_ms.tolist()
    process_bar = engine.process_bar
    syms = [s.symbol for s in prepared]
    signals = 0
    # Every window row but a symbol's last is handed to its bot when warm (the loop below).
    bot_candles = sum(int(np.count_nonzero(s.ready[: s.n - 1])) for s in prepared)
    done = 0
    n_steps = len(steps)
    reconciles = 0
    skipped_steps = skipped_candles = 0
    agenda = build_agenda(prepared, timeline.open_time_ms) if skip_ahead else None
    sides = [s.side for s in prepared]
    next_reconcile = open_times[0] + BAR_MS if n_steps else 0
    everyone = range(len(bots))
    # Per symbol, what its bot's last reconcile pass read (``_pass_key``, ``_asleep``).
    seen: list[tuple[int, int] | None] = [None] * len(bots)
    awake = (
        set() if agenda is None else {si for si in everyone if not _asleep(bots[si], engine, syms[si], None)}
    )
    rows = timeline.rows
    active: Sequence[int] = everyone
    k = -1
    while k + 1 < n_steps:
        k += 1
        if agenda is not None and not awake and (j := agenda.next_wake(k)) > k:
            # Every bot at rest and every book quiet: nothing happens until the data wakes the loop.
            skipped_steps += j - k
            skipped_candles += agenda.candles(k, j)
            done += agenda.candles(k, j)
            if progress is not None:
                progress(done, total_candles)
            if j >= n_steps:
                break
            k = j
        if agenda is None:
            step = steps[k]
        else:
            woken = agenda.wake_symbols.get(k, ())
            active = sorted(awake.union(woken)) if awake else woken
            row_k = rows[k]
            step = [(si, r) for si in active if (r := int(row_k[si])) >= 0]
        # The clock reads the candle's close before its exchange events are handled: the
        # simulator stamps what happens inside bar T at T's close, and the bots' journal entries
        # and the risk manager's daily reset must agree with those stamps.
        clock.set(open_times[k] + BAR_MS)
        if agenda is None:
            for si, row in step:
                process_bar(syms[si], row)
        else:
            # The exchange's time is this close whichever bars run (as a processed bar sets it);
            # a quiet book's bar runs only when its bot acts on it (signal, last candle).
            engine.advance_time(open_times[k] + BAR_MS)
            for si, row in step:
                if row == last_row[si] or sides[si][row] is not None or not engine.quiet(syms[si]):
                    process_bar(syms[si], row)
        if engine.has_events:
            await exchange.drain()
        ending: list[int] | None = None
        for si, row in step:
            if row == last_row[si]:
                # A symbol's last candle only closes positions (``runner`` docstring, "End of data").
                ending = [si] if ending is None else [*ending, si]
                continue
            if not ready[si][row] or (agenda is not None and prepared[si].side[row] is None):
                continue
            ctx = prepared[si].context(row)
            if ctx.signal is not None:
                signals += 1
                if blocked is not None and _blocked_by_kill_switch(bots[si], ctx.signal):
                    blocked[si] += 1
            await bots[si].on_candle(ctx)
        # Every event of this open time is delivered before time advances. ``drain`` returns at
        # once when nothing is queued (the HOLD path makes no exchange call), so it is cheap.
        await exchange.drain()
        for si in ending or ():
            bot = bots[si]
            if bot.in_position:
                await bot.close_position(CloseReason.END_OF_DATA)
                await exchange.drain()
        now = open_times[k] + BAR_MS
        if now >= next_reconcile:
            for si in active:
                if agenda is None or not _asleep(bots[si], engine, syms[si], seen[si]):
                    bot = bots[si]
                    # Taken before the pass, and only when it runs (a busy bot's returns at once).
                    if agenda is not None:
                        seen[si] = None if bot.busy else _pass_key(bot, engine, syms[si])
                    await bot.reconcile()
            await exchange.drain()
            reconciles += 1
            next_reconcile = now - now % RECONCILE_EVERY_MS + RECONCILE_EVERY_MS
        # Background work of the bots (re-protection, cancel retries, a late entry) finishes
        # before time advances: no simulated time passes while it runs, and nothing starves.
        for si in active:
            bot = bots[si]
            if bot.has_background:
                await bot.wait_background()
                await exchange.drain()
        if agenda is None:
            done += len(step)
        else:
            done += agenda.candles(k, k + 1)
            for si in active:
                if _asleep(bots[si], engine, syms[si], seen[si]):
                    awake.discard(si)
                else:
                    awake.add(si)
        if progress is not None and (k % _PROGRESS_EVERY == 0 or k == n_steps - 1):
            progress(done, total_candles)
    await exchange.drain()
    for bot in bots:
        await bot.wait_background()
    await exchange.drain()
    return bot_candles, signals, reconciles, skipped_steps, skipped_candles


def _pass_key(bot: Any, engine: Any, symbol: str) -> tuple[int, int]:
    """What a reconcile pass of a bot watching for late funding rows reads: the symbol's income
    rows (only ever added, so their count) and the bot's booked trades (a watch is added only
    when a trade is booked, so their count)."""
    return engine.income_count(symbol), len(bot.closed_trades)


def _asleep(bot: Any, engine: Any, symbol: str, seen: tuple[int, int] | None) -> bool:
    """The book quiet and the bot at rest (``backtest.agenda``), or at rest but for its watch of
    late funding rows while neither the symbol's income rows nor the bot's trades changed since
    its last reconcile pass read them (``seen``; ``SymbolBot.watching_funding_only``): nothing
    can happen to it until the data wakes it. A quiet book gains no funding row (no position),
    so such a bot sleeps from the pass after its trade was booked, not for the watch's day."""
    if not engine.quiet(symbol):
        return False
    if bot.at_rest:
        return True
    return bool(bot.watching_funding_only) and seen is not None and _pass_key(bot, engine, symbol) == seen


def _blocked_by_kill_switch(bot: Any, signal: Any) -> bool:
    """A signal the bot would consider (flat, or against its position) while its switch is tripped."""
    return bool(bot.kill_switch.tripped) and (not bot.in_position or bot.state.side is not signal)
