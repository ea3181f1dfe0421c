"""Anchored walk-forward windows for one symbol, and which trades belong to which window.

Windows: the symbol's candles are cut into ``K + 1`` chronological blocks of equal candle count.
Block 0 is in-sample only; fold ``k`` (1…K) has the anchored in-sample window ``[start, b_k −
embargo)`` and the out-of-sample window ``[b_k, b_{k+1})`` that follows it.

A trial runs one fresh backtest per block (``K + 1`` runs): each starts from the initial
balance with the kill switch and the daily limit clear, and closes what is still open at the
block's end (END_OF_DATA), as ``perpbot.backtest.walk_forward`` does for its folds. Indicators
and features are computed on the whole file, so every block starts warm. Why fresh runs: one
continuous run carries state across windows — a kill switch tripped in block 0 would stop every
later window's trading, and the out-of-sample score would measure block 0. The trades are then
assigned to windows:

* out-of-sample window ``k`` takes every trade *entered* inside ``[b_k, b_{k+1})``;
* in-sample window ``k`` takes every trade *closed* before ``b_k − embargo`` — purged (the
  trade's whole life, outcome included, is known before the cut) and embargoed (``EMBARGO`` bars
  of ``perpbot.ml.splits``, 24 = the label horizon, between the two windows).

Returns are daily: each trade's net PnL (fees and funding included) is booked on its exit day
and divided by the initial balance, so every trial's out-of-sample series has the same days —
the matrix the overfitting statistics need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perpbot.data.schema import BAR_MS
from perpbot.errors import InsufficientDataError
from perpbot.ml.splits import EMBARGO

DAY_MS = 86_400_000
MIN_WINDOW_DAYS = 7  # each block: a week of 15-minute candles at least


@dataclass(frozen=True, slots=True)
class Folds:
    """Block boundaries ``b_0 … b_{K+1}`` (candle open times, ms; ``b_{K+1}`` = last open + 1 bar)."""

    bounds: tuple[int, ...]
    embargo_ms: int

    @property
    def k(self) -> int:
        return len(self.bounds) - 2

    def oos(self, k: int) -> tuple[int, int]:
        return self.bounds[k], self.bounds[k + 1]

    def is_end(self, k: int) -> int:
        return self.bounds[k] - self.embargo_ms

    @property
    def oos_start(self) -> int:
        return self.bounds[1]

    @property
    def end(self) -> int:
        return self.bounds[-1]

    def as_dict(self) -> list[dict[str, int]]:
        return [
            {
                "fold": k,
                "is_start_ms": self.bounds[0],
                "is_end_ms": self.is_end(k),
                "oos_start_ms": self.oos(k)[0],
                "oos_end_ms": self.oos(k)[1],
            }
            for k in range(1, self.k + 1)
        ]


def make_folds(symbol: str, open_times_ms: np.ndarray, k: int, embargo_bars: int = EMBARGO) -> Folds:
    """``K + 1`` equal blocks of ``open_times_ms``; ``InsufficientDataError`` when too short."""
    if k < 1:
        raise InsufficientDataError(f"--folds {k}: need at least 1 fold")
    n = int(open_times_ms.size)
    need = MIN_WINDOW_DAYS * DAY_MS // BAR_MS
    if n < need * (k + 1):
        raise InsufficientDataError(
            f"{symbol}: {n} candles are too few for {k} folds (each of the {k + 1} windows needs "
            f"≥ {need} candles = {MIN_WINDOW_DAYS} days, so ≥ {need * (k + 1)}); "
            "use fewer --folds or more data"
        )
    cuts = [int(open_times_ms[(n * j) // (k + 1)]) for j in range(k + 1)]
    return Folds(bounds=(*cuts, int(open_times_ms[-1]) + BAR_MS), embargo_ms=embargo_bars * BAR_MS)


@dataclass(frozen=True, slots=True)
class TradeTable:
    """A trial's trades as arrays (entry/exit open-time ms, net PnL)."""

    entry_ms: np.ndarray
    exit_ms: np.ndarray
    net: np.ndarray

    @property
    def n(self) -> int:
        return int(self.net.size)


def daily_returns(table: TradeTable, mask: np.ndarray, start_ms: int, end_ms: int, base: float) -> np.ndarray:
    """Net PnL of the ``mask``ed trades per day of ``[start_ms, end_ms)`` (by exit day) / ``base``."""
    days = max(1, -(-(end_ms - start_ms) // DAY_MS))
    out = np.zeros(days, dtype=np.float64)
    if mask.any():
        idx = np.clip((table.exit_ms[mask] - start_ms) // DAY_MS, 0, days - 1)
        np.add.at(out, idx, table.net[mask] / base)
    return out


def oos_mask(table: TradeTable, folds: Folds, k: int | None = None) -> np.ndarray:
    """Trades entered inside out-of-sample window ``k`` (None: any of them)."""
    lo, hi = (folds.oos_start, folds.end) if k is None else folds.oos(k)
    return (table.entry_ms >= lo) & (table.entry_ms < hi)


def is_mask(table: TradeTable, folds: Folds, k: int) -> np.ndarray:
    """Trades closed before in-sample window ``k``'s embargoed end."""
    return (table.entry_ms >= folds.bounds[0]) & (table.exit_ms < folds.is_end(k))
