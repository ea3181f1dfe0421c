"""The multi-symbol backtester: the real bots, one shared risk manager, one simulated exchange.

What runs (principle: one core, three modes): the very ``SymbolBot`` of paper and live trading, one
per symbol, the one ``RiskManager`` they share, and one ``MatchingEngine`` behind a ``SimExchange``
port, driven candle by candle over recorded data on a ``SimClock``. Only where prices come from
differs from live trading.

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

Window: ``start`` is inclusive and ``end`` exclusive, both on candle *open* times (UTC). Features
are computed ONCE per symbol, in batch, on the whole file (so indicators are warm at ``start``;
every feature at bar ``t`` reads bars ``≤ t`` only, so nothing leaks from after ``t``), then
sliced to the window. Warm-up rows (a non-optional feature is NaN) are skipped for signals but the
exchange still processes them.

End of data: a symbol's last candle in the window only closes positions — no new signal is taken
on it (there is no later price to trade at) — and a position still open after it is closed by a
reduce-only market order at that candle's close (plus slippage and the taker fee), recorded with
reason ``END_OF_DATA``, so the trade list is complete and every figure includes every cost.

Determinism: no wall clock, no randomness, a fresh journal per run, trades sorted canonically;
the same inputs give the same trade list and fingerprint.

Speed (target ≥ 30 000 candles/s through the real bot code): the per-candle work outside the bot
is a few list look-ups; contexts are built from pre-extracted Python lists (no numpy scalars, no
pandas in the loop); after the bars ``drain`` is awaited only when the engine produced events, and
after the candles it returns at once when nothing is queued (the bot's HOLD path makes no
exchange call), so a quiet candle costs no event-loop turn.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from perpbot.backtest.metrics import DAY_MS, canonical_order, summarize
from perpbot.backtest.prepare import (
    SymbolSeries,
    Timeline,
    aligned_closes,
    build_timeline,
    cached_inputs,
    forward_fill,
    market_source,
    prepare_series,
    window_slice,
)

# Re-exported: the run's configuration and result live in ``run_result``, its set-up in
# ``run_setup`` and the preparation in ``prepare`` (tests and the walk-forward import these names
# from here).
from perpbot.backtest.run_result import BacktestConfig, BacktestResult, RunStats, iso_minute
from perpbot.backtest.run_setup import (
    UNKNOWN_WINDOW,
    capture_library_warnings,
    check_inputs,
    load_markets,
    make_entry_filter,
    training_overlap,
    training_window_ms,
)
from perpbot.config import AppConfig
from perpbot.data.schema import BAR_MS
from perpbot.domain.types import CloseReason
from perpbot.errors import DataError
from perpbot.exchange.known_filters import derived_filters

__all__ = [
    "BacktestConfig",
    "BacktestResult",
    "RunStats",
    "SymbolSeries",
    "Timeline",
    "aligned_closes",
    "build_timeline",
    "check_inputs",
    "forward_fill",
    "iso_minute",
    "load_markets",
    "prepare_series",
    "run_backtest",
    "window_slice",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""``progress(candles_done, candles_total)``; called every few thousand candles and at the end."""

_PROGRESS_EVERY = 4096  # timeline steps between progress callbacks
RECONCILE_EVERY_MS = 300_000  # as the live runtime: every bot reconciles every 5 min (issue 7 #14)


async def run_backtest(
    cfg: BacktestConfig, app_config: AppConfig, *, progress: ProgressFn | None = None
) -> BacktestResult:
    """Run the backtest described by ``cfg`` (see the module docstring) and summarise it."""
    counts: Counter[str] = Counter()
    with capture_library_warnings(counts):
        result = await _run(cfg, app_config, progress)
    if counts:
        total = sum(counts.values())
        result.warnings.append(
            f"{total} warning line(s) from the bots, by kind in metrics.json parameters.log_warnings"
        )
        result.log_warnings.update(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return result


async def _drive(
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
    ready = [s.ready.tolist() for s in prepared]
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
    awake = set() if agenda is None else {si for si in everyone if not _asleep(bots[si], engine, syms[si])}
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
                # A symbol's last candle only closes positions (module docstring, "End of data").
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
                if agenda is None or not _asleep(bots[si], engine, syms[si]):
                    await bots[si].reconcile()
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
                if _asleep(bots[si], engine, syms[si]):
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


def _asleep(bot: Any, engine: Any, symbol: str) -> bool:
    """The bot at rest and its book quiet (``backtest.agenda``): nothing can happen to it until
    the data wakes it."""
    return bool(bot.at_rest) and bool(engine.quiet(symbol))


def _blocked_by_kill_switch(bot: Any, signal: Any) -> bool:
    """A signal the bot would consider (flat, or against its position) while its switch is tripped."""
    return bool(bot.kill_switch.tripped) and (not bot.in_position or bot.state.side is not signal)


async def _run(cfg: BacktestConfig, app_config: AppConfig, progress: ProgressFn | None) -> BacktestResult:
    from perpbot.engine.bot import SymbolBot
    from perpbot.engine.clock import SimClock
    from perpbot.engine.journal import Journal
    from perpbot.engine.notifier import RecordingNotifier
    from perpbot.engine.risk import RiskManager
    from perpbot.exchange.sim.adapter import SimExchange
    from perpbot.exchange.sim.engine import MatchingEngine
    from perpbot.exchange.sim.settings import SimSettings

    t0 = time.perf_counter()
    check_inputs(cfg)
    symbols = tuple(cfg.symbols)
    app = app_config.with_symbols(list(symbols))
    warnings: list[str] = []
    prepared: list[SymbolSeries] = []
    # One symbol at a time: its file and feature arrays are dropped before the next is loaded
    # (``backtest.prepare``); with the skip-ahead only signal rows keep their context values.
    contexts = "signals" if cfg.skip_ahead else "all"
    for sym in symbols:
        pre = None if cfg.feature_arrays is None else cfg.feature_arrays.get(sym)
        if pre is None and cfg.markets is None:
            # Files on disk: the input cache serves the arrays and features (``prepare.cached_inputs``).
            market, pre = cached_inputs(sym, cfg.data_dir, app.params_for(sym))
        else:
            market = market_source(sym, cfg.data_dir, cfg.markets)
        s = prepare_series(sym, market, app, cfg.start_ms, cfg.end_ms, pre, contexts=contexts)
        del market
        if s is None:
            raise DataError(f"{sym}: no candle inside the backtest window")
        prepared.append(s)
    timeline = build_timeline(prepared)
    total_candles = sum(s.n for s in prepared)

    filters = {
        s.symbol: (
            cfg.symbol_filters[s.symbol]
            if cfg.symbol_filters is not None and s.symbol in cfg.symbol_filters
            else derived_filters(s.symbol, float(np.nanmedian(s.close)))
        )
        for s in prepared
    }
    settings = SimSettings(
        initial_balance=cfg.initial_balance,
        taker_fee=app.taker_fee if cfg.taker_fee is None else cfg.taker_fee,
        maker_fee=app.maker_fee if cfg.maker_fee is None else cfg.maker_fee,
        slippage_bps=app.slippage_bps if cfg.slippage_bps is None else cfg.slippage_bps,
    )
    engine = MatchingEngine(settings, filters)
    for s in prepared:
        engine.add_bars(s.symbol, s.open_time_ms, s.open, s.high, s.low, s.close, s.funding)
        s.funding = None  # the engine keeps its own settled copy; the raw column is not read again
    exchange = SimExchange(engine)
    first_open = int(timeline.open_time_ms[0])
    clock = SimClock(first_open)
    journal = Journal(cfg.journal_path)
    notifier = RecordingNotifier()
    risk = RiskManager(app, clock, journal=journal)
    entry_filters = [make_entry_filter(cfg, app, s.symbol) for s in prepared]
    models: dict[str, str | None] = {}
    for s, f in zip(prepared, entry_filters, strict=True):
        models[s.symbol] = getattr(f, "backend", None) if f.has_model else None
        if cfg.use_ml and cfg.entry_filters is None and not f.has_model:
            warnings.append(f"{s.symbol}: no ML model in {cfg.model_dir}; every signal passes (as --no-ml)")
    bots = [
        SymbolBot(
            s.symbol,
            app,
            exchange,
            risk,
            f,
            journal,
            clock,
            notifier,
            num_symbols=len(symbols),
            kill_switch=cfg.kill_switch.make(s.symbol, journal, clock),
        )
        for s, f in zip(prepared, entry_filters, strict=True)
    ]
    blocked = [0] * len(bots)
    in_sample: dict[str, dict[str, str]] = {}
    close_times = timeline.close_time_ms
    start_ms, end_ms = first_open, int(close_times[-1])
    for s, f in zip(prepared, entry_filters, strict=True):
        if not f.has_model:
            continue
        meta = getattr(f, "metadata", None)
        if training_window_ms(meta) is None:
            warnings.append(UNKNOWN_WINDOW.format(symbol=s.symbol))
        overlap = training_overlap(meta, start_ms, end_ms)
        if overlap is not None:
            in_sample[s.symbol] = overlap
    t_prep = time.perf_counter() - t0

    t1 = time.perf_counter()
    try:
        await exchange.start()
        # SPEC §13 row 15: the base balance is set once, before any bot starts.
        risk.set_base_balance(await exchange.balance())
        for bot in bots:
            await bot.start(None)
        await exchange.drain()
        bot_candles, signals, reconciles, steps_skipped, candles_skipped = await _drive(
            prepared,
            timeline,
            engine,
            exchange,
            clock,
            bots,
            progress,
            total_candles,
            blocked,
            skip_ahead=cfg.skip_ahead,
        )
    finally:
        await exchange.aclose()
    t_loop = time.perf_counter() - t1
    final_balance = engine.balance()

    leftovers = [b.symbol for b in bots if b.in_position]
    if leftovers:
        warnings.append(f"positions still open after the end-of-data close: {leftovers}")
    trades = canonical_order(t for b in bots for t in b.closed_trades)
    trips = [
        {"symbol": e.symbol, "time": iso_minute(e.time_ms), "time_ms": e.time_ms, "reason": e.message}
        for e in journal.events("kill_switch.trip")
    ]
    resets = [
        {"symbol": e.symbol, "time": iso_minute(e.time_ms), "time_ms": e.time_ms, "reason": e.message}
        for e in journal.events("kill_switch.reset")
    ]
    limit_days = len({e.time_ms // DAY_MS for e in journal.events("risk.daily_loss_limit")})
    close_timeouts = len(journal.events("close_timeout"))
    journal.close()
    stats = RunStats(
        candles=total_candles,
        bot_candles=bot_candles,
        signals=signals,
        timeline_steps=int(timeline.open_time_ms.size),
        seconds_prepare=t_prep,
        seconds_loop=t_loop,
        bot_errors=sum(b.errors for b in bots),
        alerts=sum(1 for kind, _ in notifier.messages if kind in ("alert", "emergency")),
        close_timeouts=close_timeouts,
        reconciles=reconciles,
        steps_skipped=steps_skipped,
        candles_skipped=candles_skipped,
    )
    if stats.bot_errors:
        warnings.append(
            f"{stats.bot_errors} per-candle/per-event errors were caught by the bots (see the log)"
        )
    if close_timeouts:
        warnings.append(
            f"{close_timeouts} close(s) not confirmed in time (released with PnL 0, then booked late)"
        )
    closes = aligned_closes(prepared, timeline)
    from perpbot.backtest.trade_chart import Candles

    candles = {s.symbol: Candles(s.open_time_ms, s.open, s.high, s.low, s.close) for s in prepared}
    report = summarize(
        trades, symbols, close_times, closes, cfg.initial_balance, start_ms=start_ms, end_ms=end_ms
    )
    return BacktestResult(
        config=cfg,
        symbols=symbols,
        trades=trades,
        metrics=report,
        close_time_ms=close_times,
        closes=closes,
        start_ms=start_ms,
        end_ms=end_ms,
        stats=stats,
        filters=filters,
        models=models,
        sim={
            "taker_fee": settings.taker_fee,
            "maker_fee": settings.maker_fee,
            "slippage_bps": settings.slippage_bps,
            "intrabar_path": settings.intrabar_path,
            "maintenance_margin_rate": settings.maintenance_margin_rate,
            "leverage": app.leverage,
        },
        final_balance=final_balance,
        in_sample=in_sample,
        warnings=warnings,
        kill_switch_trips=trips,
        daily_limit_days=limit_days,
        kill_switch_blocked={s.symbol: n for s, n in zip(prepared, blocked, strict=True)},
        kill_switch_resets=resets,
        candles=candles,
    )
