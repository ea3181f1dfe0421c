"""A backtest's inputs and outputs: ``BacktestConfig`` (what to run), ``RunStats`` (how the loop
went) and ``BacktestResult`` (trades, metrics, fingerprint and what the report shows).

Why apart from ``runner``: the walk-forward, the optimiser, paper mode and the CLI build and read
these without running anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perpbot.backtest.kill_switch_policy import KILL_SWITCH_ON, KillSwitchPolicy
from perpbot.domain.types import ClosedTrade, SymbolFilters
from perpbot.errors import ConfigError
from perpbot.ml.decision import EntryFilter

if TYPE_CHECKING:  # frames only where a caller hands them in: the run itself reads arrays
    import pandas as pd

    from perpbot.backtest.candle_bars import Candles
    from perpbot.backtest.metrics import MetricsReport  # the run's end: imported after the loop


def _to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def iso_minute(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


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
