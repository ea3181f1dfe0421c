"""What a backtest checks and builds before its first candle: input checks, the markets, each
symbol's entry filter (and whether its model saw the window), library-warning capture.

Why apart from ``runner``: the walk-forward and paper mode share these steps; the runner keeps
only the loop.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perpbot.config import AppConfig
from perpbot.data.schema import BAR_MS, data_path
from perpbot.errors import ConfigError, DataError
from perpbot.ml.decision import EntryFilter, PassThroughFilter

if TYPE_CHECKING:  # frames only where a caller hands them in: the run itself reads arrays
    import pandas as pd

from perpbot.backtest.run_result import BacktestConfig, _to_ms, iso_minute


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
