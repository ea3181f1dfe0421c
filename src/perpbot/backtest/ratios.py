"""The figures traders compare backtests by, beside the core metrics: CAGR, Sortino, Calmar, trade
durations, the long/short split and a buy-and-hold benchmark.

Why a module of its own: these are pure functions of the same two honest inputs as
``perpbot.backtest.metrics`` (closed trades and the close prices of the run), and keeping them
apart keeps that module readable. Definitions (part of the report's contract):

- **CAGR**: ``(end / start) ** (365 days / span) − 1`` in percent, where the span is the run's
  time span. On a run shorter than a year it *extrapolates*; ``None`` when undefined (no span, a
  non-positive start or end equity).
- **Sortino**: daily returns (as for Sharpe), mean / downside deviation × √365, the downside
  deviation being ``sqrt(mean(min(r, 0)²))`` over all days (target 0). ``None`` with fewer than
  two days or no losing day.
- **Calmar**: CAGR / max drawdown (both as fractions). ``None`` without a drawdown or a CAGR.
- **durations**: exit time − entry time of each closed trade, in hours (mean and median).
- **long/short split**: trade count, net PnL and win rate of each side.
- **buy and hold**: the traded symbols bought at the first close of the window, equal weights
  (``initial / N`` each, as the bots' allocation), held to the last close, unleveraged, without
  fees or funding: what simply holding the coins would have done over the very same window.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from perpbot.domain.types import ClosedTrade, Side

YEAR_MS = 365 * 86_400_000
HOUR_MS = 3_600_000


def cagr_pct(start_equity: float, end_equity: float, span_ms: int) -> float | None:
    """Compound annual growth rate in percent (see the module docstring)."""
    if span_ms <= 0 or not (start_equity > 0) or not (end_equity > 0):
        return None
    return ((end_equity / start_equity) ** (YEAR_MS / span_ms) - 1.0) * 100.0


def sortino_ratio(returns: np.ndarray, periods_per_year: int = 365) -> float | None:
    """Annualised Sortino ratio of periodic returns (target 0); ``None`` when undefined."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if not math.isfinite(downside) or downside <= 1e-15:
        return None
    return float(r.mean() / downside * math.sqrt(periods_per_year))


def calmar_ratio(cagr: float | None, max_drawdown_pct: float) -> float | None:
    """CAGR over the max drawdown (both percentages, so the ratio is unit-free)."""
    if cagr is None or not (max_drawdown_pct > 0):
        return None
    return cagr / max_drawdown_pct


def durations_h(trades: Sequence[ClosedTrade]) -> tuple[float | None, float | None]:
    """(mean, median) holding time in hours; ``(None, None)`` without trades."""
    hours = [(t.exit_time_ms - t.entry_time_ms) / HOUR_MS for t in trades]
    if not hours:
        return None, None
    return math.fsum(hours) / len(hours), float(statistics.median(hours))


@dataclass(frozen=True, slots=True)
class SideSplit:
    """One side's share of the trades."""

    trades: int
    net_pnl: float
    win_rate: float | None


def side_split(trades: Sequence[ClosedTrade], side: Side) -> SideSplit:
    mine = [t.net_pnl for t in trades if t.side is side]
    wins = sum(1 for p in mine if p > 0)
    return SideSplit(len(mine), math.fsum(mine), wins / len(mine) if mine else None)


@dataclass(frozen=True, slots=True)
class BuyAndHold:
    """The buy-and-hold benchmark over the run's window (module docstring)."""

    per_symbol_return_pct: dict[str, float | None]
    return_pct: float | None
    end_equity: float | None
    max_drawdown_pct: float | None
    cagr_pct: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def buy_and_hold(
    symbols: Sequence[str],
    closes: Mapping[str, np.ndarray],
    initial_balance: float,
    span_ms: int,
) -> BuyAndHold:
    """Equal-weight buy-and-hold of ``symbols`` on the aligned ``closes`` (NaN before a symbol's
    first candle: that symbol is bought at its first close and its share waits in cash).

    The legs are summed into one array as each is computed, in symbol order: a list of every leg
    and its stacked copy for ``np.sum`` held two timeline-long arrays per symbol at the end of the
    run, its memory peak (issue 13: 56 MiB for 100 symbols over a year). The sum is the one
    ``np.sum(axis=0)`` made on two or more candles (it adds rows in order there)."""
    share = initial_balance / max(len(symbols), 1)
    per_symbol: dict[str, float | None] = {}
    legs = 0
    total: np.ndarray | None = None
    for sym in symbols:
        px = np.asarray(closes.get(sym, np.zeros(0)), dtype=np.float64)
        finite = np.flatnonzero(np.isfinite(px) & (px > 0))
        if finite.size == 0:
            per_symbol[sym] = None
            continue
        first = px[finite[0]]
        per_symbol[sym] = (px[finite[-1]] / first - 1.0) * 100.0
        held = np.where(np.isfinite(px), px / first, np.nan)
        # Forward-fill gaps (the aligned closes are already filled; NaN only before the start).
        leg = np.where(np.isnan(held), 1.0, held) * share
        del held
        legs += 1
        if total is None:
            total = leg
        else:
            total += leg
    if total is None:
        return BuyAndHold(per_symbol, None, None, None, None)
    cash = share * (len(symbols) - legs)
    equity = total + cash
    peak = np.maximum.accumulate(np.concatenate(([initial_balance], equity)))
    dd = float(np.max((peak[1:] - equity) / peak[1:])) * 100.0
    end = float(equity[-1])
    return BuyAndHold(
        per_symbol_return_pct=per_symbol,
        return_pct=(end / initial_balance - 1.0) * 100.0,
        end_equity=end,
        max_drawdown_pct=dd,
        cagr_pct=cagr_pct(initial_balance, end, span_ms),
    )
