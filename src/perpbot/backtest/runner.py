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
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perpbot.backtest.kill_switch_policy import KILL_SWITCH_ON, KillSwitchPolicy
from perpbot.backtest.metrics import DAY_MS, MetricsReport, canonical_order, summarize
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
from perpbot.config import AppConfig
from perpbot.data.schema import BAR_MS, data_path
from perpbot.domain.types import ClosedTrade, CloseReason, SymbolFilters
from perpbot.errors import ConfigError, DataError
from perpbot.exchange.known_filters import derived_filters
from perpbot.ml.decision import EntryFilter, PassThroughFilter

if TYPE_CHECKING:  # frames only where a caller hands them in: the run itself reads arrays
    import pandas as pd

    from perpbot.backtest.trade_chart import Candles

# Re-exported: the preparation lives in ``backtest.prepare`` (tests and the walk-forward import
# these names from here).
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


@dataclass(frozen=True, slots=True, eq=False)
class BacktestConfig:
    """One backtest run. Times are UTC; ``start`` inclusive, ``end`` exclusive (candle open times).

    ``taker_fee``/``maker_fee``/``slippage_bps`` default to the application configuration
    (``TAKER_FEE``, ``MAKER_FEE``, ``SLIPPAGE_BPS``). ``journal_path`` must not exist yet (a
    journal left by another run would restore its kill-switch state and break determinism);
    ``":memory:"`` keeps it in RAM. The simulator has no randomness; ``seed`` is recorded with
    the run and used by whatever is stochastic around it (synthetic data, walk-forward training).

    ``markets`` (symbol → frame in the data schema) replaces reading ``data_dir``; ``entry_filters``
    (symbol → filter) replaces the ``MLFilter``/``PassThroughFilter`` choice; ``symbol_filters``
    replaces the exchange filters. Tests and the walk-forward use them. ``feature_arrays``
    (symbol → the arrays ``features.feature_arrays(market, params)`` would return for the run's
    parameters) skips the per-run feature computation: the optimiser computes the
    parameter-independent part once and only the signal columns per trial.
    """

    symbols: tuple[str, ...]
    data_dir: Path = Path("data")
    model_dir: Path = Path("models")
    start: datetime | None = None
    end: datetime | None = None
    use_ml: bool = True
    initial_balance: float = 1000.0
    taker_fee: float | None = None
    maker_fee: float | None = None
    slippage_bps: float | None = None
    journal_path: Path | str = ":memory:"
    seed: int = 42
    markets: Mapping[str, pd.DataFrame] | None = None
    entry_filters: Mapping[str, EntryFilter] | None = None
    symbol_filters: Mapping[str, SymbolFilters] | None = None
    kill_switch: KillSwitchPolicy = KILL_SWITCH_ON  # --kill-switch (default on, as live)
    feature_arrays: Mapping[str, Mapping[str, np.ndarray]] | None = None
    # Skip the steps where nothing can happen (``backtest.agenda``); False steps through every
    # candle (the reference the equivalence tests compare against).
    skip_ahead: bool = True

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ConfigError("backtest: no symbol given")
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError(f"backtest symbols {list(self.symbols)}: a symbol is listed twice")
        if not (self.initial_balance > 0 and math.isfinite(self.initial_balance)):
            raise ConfigError(f"initial balance {self.initial_balance!r}: must be > 0")
        for name in ("taker_fee", "maker_fee", "slippage_bps"):
            v = getattr(self, name)
            if v is not None and not (v >= 0):
                raise ConfigError(f"{name}={v!r}: must be >= 0")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ConfigError(f"backtest window: start {self.start} is not before end {self.end}")

    @property
    def start_ms(self) -> int | None:
        return None if self.start is None else _to_ms(self.start)

    @property
    def end_ms(self) -> int | None:
        return None if self.end is None else _to_ms(self.end)


@dataclass(frozen=True, slots=True)
class RunStats:
    """How the run went mechanically (benchmarks and the report's parameters)."""

    candles: int  # candles processed by the exchange, all symbols
    bot_candles: int  # candles handed to a bot (warm-up rows excluded)
    signals: int  # candles whose context carried a rule signal
    timeline_steps: int
    seconds_prepare: float
    seconds_loop: float
    bot_errors: int
    alerts: int
    close_timeouts: int
    reconciles: int = 0  # reconcile passes, one per RECONCILE_EVERY_MS of simulated time stepped
    steps_skipped: int = 0  # timeline steps passed over by the skip-ahead (nothing could happen)
    candles_skipped: int = 0  # candles (all symbols) in those steps

    @property
    def candles_per_second(self) -> float:
        return self.candles / self.seconds_loop if self.seconds_loop > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Everything the report and the tests need; ``trades`` are in canonical order."""

    config: BacktestConfig
    symbols: tuple[str, ...]
    trades: list[ClosedTrade]
    metrics: MetricsReport
    close_time_ms: np.ndarray  # timeline close times
    closes: dict[str, np.ndarray]  # per symbol, aligned on the timeline, forward-filled
    start_ms: int
    end_ms: int
    stats: RunStats
    filters: dict[str, SymbolFilters]
    models: dict[str, str | None]  # symbol → backend in use (None: no model / pass-through)
    sim: dict[str, Any]
    final_balance: float  # the simulated wallet after the last close (= initial + Σ net PnL)
    warnings: list[str] = field(default_factory=list)
    # Risk events that shape the trade list (journal): kill-switch trips and daily-limit hits.
    kill_switch_trips: list[dict[str, Any]] = field(default_factory=list)
    daily_limit_days: int = 0
    # WARNING+ log lines of the library during the run, by message template (when logging is
    # not configured by the caller; see ``capture_library_warnings``).
    log_warnings: dict[str, int] = field(default_factory=dict)
    # Symbols whose model was trained on candles (labels included) inside the backtest window:
    # symbol → {"train_start", "train_end"}. Their ML-on figures are in-sample.
    in_sample: dict[str, dict[str, str]] = field(default_factory=dict)
    # Signals that arrived while the symbol's kill switch was tripped and would otherwise have
    # been considered (flat, or against the open position), and the automatic resets.
    kill_switch_blocked: dict[str, int] = field(default_factory=dict)
    kill_switch_resets: list[dict[str, Any]] = field(default_factory=list)
    # Per symbol, the window's candles the run traded on (the engine's own arrays, not copies):
    # the trade charts draw them without loading the data again.
    candles: dict[str, Candles] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.metrics.fingerprint

    @property
    def title(self) -> str:
        mode = "ML on" if self.config.use_ml else "ML off"
        return (
            f"perpbot backtest {','.join(self.symbols)} {iso_minute(self.start_ms)} → "
            f"{iso_minute(self.end_ms)} ({mode})"
        )

    def parameters(self) -> dict[str, Any]:
        """The run's parameters as written into ``metrics.json``."""
        c = self.config
        return {
            "symbols": list(self.symbols),
            "start": iso_minute(self.start_ms),
            "end": iso_minute(self.end_ms),
            "window": "start inclusive, end exclusive, candle open times, UTC",
            "use_ml": c.use_ml,
            "models": dict(self.models),
            "data_dir": None if c.markets is not None else str(c.data_dir),
            "model_dir": str(c.model_dir) if c.use_ml and c.entry_filters is None else None,
            "initial_balance": c.initial_balance,
            "final_balance": self.final_balance,
            "seed": c.seed,
            "sim": dict(self.sim),
            "symbol_filters": {
                s: {
                    "tick_size": f.tick_size,
                    "step_size": f.step_size,
                    "min_qty": f.min_qty,
                    "min_notional": f.min_notional,
                }
                for s, f in self.filters.items()
            },
            "end_of_data": "open positions closed at each symbol's last close (reason END_OF_DATA)",
            "stats": {
                "candles": self.stats.candles,
                "bot_candles": self.stats.bot_candles,
                "signals": self.stats.signals,
                "seconds_loop": round(self.stats.seconds_loop, 3),
                "candles_per_second": round(self.stats.candles_per_second, 1),
                "bot_errors": self.stats.bot_errors,
                "alerts": self.stats.alerts,
                "close_timeouts": self.stats.close_timeouts,
                "reconciles": self.stats.reconciles,
                "steps_skipped": self.stats.steps_skipped,
                "candles_skipped": self.stats.candles_skipped,
            },
            "warnings": list(self.warnings),
            "kill_switch": c.kill_switch.describe(),
            "kill_switch_trips": list(self.kill_switch_trips),
            "kill_switch_resets": list(self.kill_switch_resets),
            "kill_switch_blocked_signals": dict(self.kill_switch_blocked),
            "daily_loss_limit_days": self.daily_limit_days,
            "log_warnings": dict(self.log_warnings),
            "in_sample_models": dict(self.in_sample),
        }

    def markers(self) -> list[tuple[int, str]]:
        """Chart markers: kill-switch trips (after them a symbol takes no new entry)."""
        out = []
        for trip in self.kill_switch_trips:
            out.append((int(trip["time_ms"]), f"{trip['symbol']} kill switch"))
        for reset in self.kill_switch_resets:
            out.append((int(reset["time_ms"]), f"{reset['symbol']} kill switch reset"))
        return out

    def notes(self) -> list[str]:
        """Plain-language lines about what limited the run (for the terminal)."""
        out: list[str] = []
        for sym, win in self.in_sample.items():
            out.append(
                f"{sym}: IN-SAMPLE — its model was trained on {win['train_start']} → {win['train_end']}, "
                "inside this window; ML-on figures there grade the model on its own training data. "
                "Use --walk-forward for out-of-sample evidence"
            )
        policy = self.config.kill_switch
        latches = policy.mode == "on"
        for trip in self.kill_switch_trips:
            out.append(
                f"{trip['symbol']}: kill switch tripped at {trip['time']} ({trip['reason']}); "
                + (
                    "no entries for it afterwards, as in live trading"
                    if latches
                    else f"entries blocked until its reset (--kill-switch {policy.describe()})"
                )
            )
        if policy.mode == "off":
            out.append("kill switch off (--kill-switch off): unlike live trading, it never trips")
        blocked = {s: n for s, n in self.kill_switch_blocked.items() if n}
        if blocked:
            detail = ", ".join(f"{s} {n}" for s, n in blocked.items())
            out.append(f"kill switch blocked {sum(blocked.values())} signal(s): {detail}")
        if self.daily_limit_days:
            out.append(
                f"daily loss limit reached on {self.daily_limit_days} day(s): entries blocked those days"
            )
        return out


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def iso_minute(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def check_inputs(cfg: BacktestConfig) -> None:
    """Fail fast with one line (exit 2) before any work: missing data files, a stale journal."""
    if cfg.markets is None:
        for sym in cfg.symbols:
            path = data_path(cfg.data_dir, sym)
            if not path.is_file():
                raise DataError(
                    f"{path}: no market data for {sym} (fetch it first: perpbot fetch --symbol {sym})"
                )
    else:
        missing = [s for s in cfg.symbols if s not in cfg.markets]
        if missing:
            raise DataError(f"backtest: no market frame given for {missing[0]}")
    jp = str(cfg.journal_path)
    if jp != ":memory:" and Path(jp).exists():
        raise ConfigError(f"{jp}: journal already exists; a backtest needs a fresh journal")


def load_markets(cfg: BacktestConfig) -> dict[str, pd.DataFrame]:
    """The validated frames, from ``cfg.markets`` or ``<data_dir>/<sym>/combined_15m.parquet``.

    For callers that need frames (the walk-forward's training); the run itself streams arrays
    (``backtest.prepare``)."""
    if cfg.markets is not None:
        return {s: cfg.markets[s] for s in cfg.symbols}
    from perpbot.data.store import load_market

    return {s: load_market(data_path(cfg.data_dir, s)) for s in cfg.symbols}


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


def make_entry_filter(cfg: BacktestConfig, app_config: AppConfig, symbol: str) -> EntryFilter:
    """``MLFilter`` on ``<model_dir>/<sym>/`` (ML on) or ``PassThroughFilter`` (``--no-ml``).

    Hot reload is off: a backtest must not change model half-way because a file was rewritten.
    """
    if cfg.entry_filters is not None and symbol in cfg.entry_filters:
        return cfg.entry_filters[symbol]
    if not cfg.use_ml:
        return PassThroughFilter()
    from perpbot.data.schema import model_dir
    from perpbot.ml.filter import MLFilter

    return MLFilter(
        model_dir(cfg.model_dir, symbol),
        backends=app_config.ml_backends,
        threshold=app_config.ml_threshold,
        threshold_mode=app_config.ml_threshold_mode,
        disabled=False,
        hot_reload=False,
        allow_ungated=app_config.ml_allow_ungated,  # as ``perpbot backtest`` and the live filter
    )


def training_window_ms(metadata: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """(first, last) training-sample open time recorded in a model's metadata, or None if absent."""
    win = (metadata or {}).get("training_window")
    if not isinstance(win, Mapping):
        return None
    try:
        a = _to_ms(datetime.fromisoformat(str(win["start"]).replace("Z", "+00:00")))
        b = _to_ms(datetime.fromisoformat(str(win["end"]).replace("Z", "+00:00")))
    except (KeyError, TypeError, ValueError):
        return None
    return a, b


def training_overlap(
    metadata: Mapping[str, Any] | None, start_ms: int, end_ms: int, lookahead_bars: int = 24
) -> dict[str, str] | None:
    """The model's training window when it overlaps ``[start_ms, end_ms)``, else None.

    A sample's label reads ``lookahead_bars`` candles after it, so the window the model learnt
    from ends ``lookahead_bars`` after its last sample. Metadata without a training window gives
    None here; the run warns about it separately (``UNKNOWN_WINDOW``), never silently.
    """
    window = training_window_ms(metadata)
    if window is None:
        return None
    a, b = window
    b_label = b + (lookahead_bars + 1) * BAR_MS
    if a < end_ms and b_label > start_ms:
        return {"train_start": iso_minute(a), "train_end": iso_minute(b)}
    return None


UNKNOWN_WINDOW = (
    "{symbol}: its model records no training window, so whether the ML-on figures are out of "
    "sample cannot be told; retrain it or use --walk-forward"
)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


class _CountingHandler(logging.Handler):
    def __init__(self, counts: Counter[str]) -> None:
        super().__init__(logging.WARNING)
        self.counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname}: {record.msg}"] += 1


@contextmanager
def capture_library_warnings(counts: Counter[str]) -> Iterator[None]:
    """Count the library's WARNING+ lines instead of letting Python's last-resort handler print
    each one (a year of candles makes thousands: "daily loss limit reached", ...).

    Only when nobody configured logging (no handler on the root or ``perpbot`` logger): an
    application that set up logging keeps every line where it asked for them.
    """
    lib = logging.getLogger("perpbot")
    if logging.getLogger().handlers or lib.handlers:
        yield
        return
    handler = _CountingHandler(counts)
    old = lib.propagate
    lib.addHandler(handler)
    lib.propagate = False
    try:
        yield
    finally:
        lib.removeHandler(handler)
        lib.propagate = old


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
    from perpbot.exchange.sim.engine import MatchingEngine, SimSettings

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
