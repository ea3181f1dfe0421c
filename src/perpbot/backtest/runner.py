"""The multi-symbol backtester: the real bots, one shared risk manager, one simulated exchange.

What runs (principle: one core, three modes): the very ``SymbolBot`` of paper and live trading, one
per symbol, the one ``RiskManager`` they share, and one ``MatchingEngine`` behind a ``SimExchange``
port, driven candle by candle over recorded data on a ``SimClock``. Only where prices come from
differs from live trading.

The loop itself (time order, skip-ahead, what each step costs) is ``backtest.loop``.

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
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from perpbot.backtest.heap import release_free_heap

# ``_drive`` is a module global so that the bench can wrap it (it times the first candle).
from perpbot.backtest.loop import ProgressFn
from perpbot.backtest.loop import drive as _drive
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
from perpbot.domain.types import SymbolFilters
from perpbot.errors import DataError
from perpbot.exchange.known_filters import KNOWN_FILTERS, derived_filters

if TYPE_CHECKING:
    from perpbot.backtest.candle_bars import Candles

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


async def run_backtest(
    cfg: BacktestConfig,
    app_config: AppConfig,
    *,
    progress: ProgressFn | None = None,
    on_window: Callable[[dict[str, Candles]], None] | None = None,
) -> BacktestResult:
    """Run the backtest described by ``cfg`` (see the module docstring) and summarise it.
    ``on_window`` gets each symbol's window candles (the result's ``candles``) before the first
    candle is stepped: ``perpbot backtest``'s chart worker draws them while the loop runs."""
    counts: Counter[str] = Counter()
    with capture_library_warnings(counts):
        result = await _run(cfg, app_config, progress, on_window)
    if counts:
        total = sum(counts.values())
        result.warnings.append(
            f"{total} warning line(s) from the bots, by kind in metrics.json parameters.log_warnings"
        )
        result.log_warnings.update(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return result


def _symbol_filters(cfg: BacktestConfig, s: SymbolSeries) -> SymbolFilters:
    """The given filters, the recorded ones, else estimated from the median close. The median only
    where it is read: ``np.nanmedian`` imports ``numpy.ma`` (~15 ms before the first candle)."""
    if cfg.symbol_filters is not None and s.symbol in cfg.symbol_filters:
        return cfg.symbol_filters[s.symbol]
    level = float("nan") if s.symbol in KNOWN_FILTERS else float(np.nanmedian(s.close))
    return derived_filters(s.symbol, level)


def _prepare(cfg: BacktestConfig, app: AppConfig, sym: str) -> SymbolSeries:
    """One symbol's series. Its file and feature arrays live in this call only, so they are freed
    before the next symbol is loaded (``backtest.prepare``); a loop variable kept the last
    symbol's features (~9 MiB for a year) through the whole run and next to the next symbol's
    file (issue 13). With the skip-ahead only signal rows keep their context values."""
    pre = None if cfg.feature_arrays is None else cfg.feature_arrays.get(sym)
    if pre is None and cfg.markets is None:
        # Files on disk: the input cache serves the arrays and features (``prepare.cached_inputs``).
        market, pre = cached_inputs(sym, cfg.data_dir, app.params_for(sym))
    else:
        market = market_source(sym, cfg.data_dir, cfg.markets)
    contexts = "signals" if cfg.skip_ahead else "all"
    s = prepare_series(sym, market, app, cfg.start_ms, cfg.end_ms, pre, contexts=contexts)
    if s is None:
        raise DataError(f"{sym}: no candle inside the backtest window")
    return s


async def _run(
    cfg: BacktestConfig,
    app_config: AppConfig,
    progress: ProgressFn | None,
    on_window: Callable[[dict[str, Candles]], None] | None = None,
) -> BacktestResult:
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
    # One symbol at a time (``_prepare``). Its freed pages go back to the OS at once: the kept
    # arrays, allocated last, would pin them in the heap for the whole run (``backtest.heap``).
    for sym in symbols:
        prepared.append(_prepare(cfg, app, sym))
        release_free_heap()
    timeline = build_timeline(prepared)
    total_candles = sum(s.n for s in prepared)

    filters = {s.symbol: _symbol_filters(cfg, s) for s in prepared}
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
    # In memory while the run lasts, copied to ``journal_path`` at its end (``Journal.copy_to``):
    # the file is this run's alone (``check_inputs``), so nothing needs its writer thread, whose
    # per-statement GIL hand-offs cost the loop ~10-15 % and the report's first read a wait.
    # The file is opened now all the same, so that a path that cannot be written fails first.
    journal = Journal(":memory:")
    if str(cfg.journal_path) != ":memory:":
        Journal.reserve(cfg.journal_path)
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
    from perpbot.backtest.candle_bars import Candles

    candles = {s.symbol: Candles(s.open_time_ms, s.open, s.high, s.low, s.close) for s in prepared}
    if on_window is not None:
        on_window(candles)

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
    # The metrics module is needed from here on only: imported after the first candle (issue 13).
    from perpbot.backtest.metrics import DAY_MS, canonical_order, summarize

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
    if str(cfg.journal_path) != ":memory:":
        journal.copy_to(cfg.journal_path)
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
