"""Backtest metrics, per symbol and for the portfolio, and the trade-list fingerprint.

Every figure is computed from two honest inputs only: the list of closed trades (net of every
cost, as the bots recorded them) and the close prices the run saw. Nothing here knows about the
bot or the simulator, so the same functions grade a backtest, a paper run or a live journal.

Definitions (they are part of the report's contract, hence spelled out):

- **net PnL** of a trade: realised PnL − entry fee − exit fee + funding (``ClosedTrade.net_pnl``).
- **win rate**: trades with net PnL > 0 divided by all trades (a net-zero trade is not a win).
- **profit factor**: Σ positive net PnL / |Σ negative net PnL|. ``None`` when there is no losing
  trade (undefined; a run with no loss is reported as such rather than as a huge number).
- **equity curve**: sampled at every candle close of the run's timeline. A closed trade adds its
  whole net PnL at the first close at or after its exit time; an open trade is marked to market at
  each close (``sign · qty · (close − entry) − entry fee``). Funding and the exit fee are therefore
  booked at the exit, which understates intra-trade drawdowns by at most those amounts.
  The portfolio curve starts at the initial balance; a symbol's curve starts at its allocation
  ``initial / N`` because every bot sizes from its ``B/N`` share (SPEC §8.4).
- **max drawdown**: the largest fall from a running peak of the equity curve (the starting
  balance included), in account currency (``max_drawdown``) and in percent of that peak
  (``max_drawdown_pct``); ``return_pct`` is the end equity over the start, in percent.
- **Sharpe**: daily simple returns of the equity curve (last equity of each UTC day, the starting
  balance as day 0), mean / sample standard deviation × √365 — crypto trades every day of the
  year; risk-free rate 0. ``None`` with fewer than two daily returns or zero variance.
- **exposure**: the fraction of the run's time span during which a position was open (for the
  portfolio: at least one position, intervals merged so overlaps are not double-counted).
- **fingerprint**: see ``fingerprint``.
- CAGR, Sortino, Calmar, trade durations, the long/short split and the buy-and-hold benchmark are
  defined in ``perpbot.backtest.ratios``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from perpbot.backtest import ratios
from perpbot.domain.types import ClosedTrade, Side

DAY_MS = 86_400_000
ANNUALISATION_DAYS = 365
FINGERPRINT_VERSION = "perpbot-trades-v1"
# 12 significant digits: exact enough that any meaningful change of a price, a quantity or a fee
# changes the hash, loose enough that a last-ulp difference of a summation order does not.
_FLOAT_FORMAT = ".12g"


@dataclass(frozen=True, slots=True)
class EquityCurve:
    """Equity sampled at candle close times (``time_ms`` strictly increasing)."""

    time_ms: np.ndarray  # int64
    equity: np.ndarray  # float64

    @property
    def drawdown(self) -> np.ndarray:
        """Distance below the running peak, in account currency (≥ 0)."""
        if self.equity.size == 0:
            return np.zeros(0)
        return np.maximum.accumulate(self.equity) - self.equity


@dataclass(frozen=True, slots=True)
class Metrics:
    """The summary of one equity curve and its trades. Ratios are ``None`` when undefined."""

    trades: int
    wins: int
    losses: int
    win_rate: float | None
    profit_factor: float | None
    net_pnl: float
    gross_profit: float
    gross_loss: float
    fees: float
    funding: float
    avg_trade: float | None
    start_equity: float
    end_equity: float
    return_pct: float | None
    max_drawdown: float
    max_drawdown_pct: float
    sharpe: float | None
    exposure: float
    # Trader's figures (definitions in ``perpbot.backtest.ratios``).
    cagr_pct: float | None = None
    sortino: float | None = None
    calmar: float | None = None
    avg_duration_h: float | None = None
    median_duration_h: float | None = None
    long_trades: int = 0
    long_net_pnl: float = 0.0
    long_win_rate: float | None = None
    short_trades: int = 0
    short_net_pnl: float = 0.0
    short_win_rate: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Elementary statistics
# ---------------------------------------------------------------------------------------------


def profit_factor(net_pnls: Iterable[float]) -> float | None:
    """Gross profit / gross loss of net trade results; ``None`` without any losing trade."""
    gains = 0.0
    losses = 0.0
    for p in net_pnls:
        if p > 0:
            gains += p
        elif p < 0:
            losses -= p
    if losses == 0.0:
        return None
    return gains / losses


def max_drawdown(equity: np.ndarray) -> tuple[float, float]:
    """(largest fall from a running peak, that fall as a fraction of its peak)."""
    eq = np.asarray(equity, dtype=np.float64)
    if eq.size == 0:
        return 0.0, 0.0
    peak = np.maximum.accumulate(eq)
    dd = peak - eq
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(peak > 0, dd / peak, 0.0)
    return float(dd.max()), float(frac.max())


def daily_returns(time_ms: np.ndarray, equity: np.ndarray, start_equity: float) -> np.ndarray:
    """Simple returns between the last equity of consecutive UTC days (day 0 = ``start_equity``)."""
    t = np.asarray(time_ms, dtype=np.int64)
    eq = np.asarray(equity, dtype=np.float64)
    if t.size == 0:
        return np.zeros(0)
    # A close at exactly midnight belongs to the day that just ended: shift by one millisecond.
    day = (t - 1) // DAY_MS
    last_of_day = np.flatnonzero(np.diff(day, append=day[-1] + 1) != 0)
    closes = np.concatenate(([start_equity], eq[last_of_day]))
    prev = closes[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = np.where(prev != 0, np.diff(closes) / prev, 0.0)
    return rets


def sharpe_ratio(returns: np.ndarray, periods_per_year: int = ANNUALISATION_DAYS) -> float | None:
    """Annualised Sharpe of periodic returns (risk-free 0, sample std); ``None`` when undefined."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return None
    sd = float(r.std(ddof=1))
    if not math.isfinite(sd) or sd <= 1e-15:
        return None
    return float(r.mean() / sd * math.sqrt(periods_per_year))


def exposure(intervals: Iterable[tuple[int, int]], start_ms: int, end_ms: int) -> float:
    """Fraction of ``[start_ms, end_ms)`` covered by the union of ``[entry, exit)`` intervals."""
    span = end_ms - start_ms
    if span <= 0:
        return 0.0
    clipped = sorted(
        (max(a, start_ms), min(b, end_ms)) for a, b in intervals if min(b, end_ms) > max(a, start_ms)
    )
    covered = 0
    cur_a: int | None = None
    cur_b = 0
    for a, b in clipped:
        if cur_a is None or a > cur_b:
            if cur_a is not None:
                covered += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None:
        covered += cur_b - cur_a
    return covered / span


# ---------------------------------------------------------------------------------------------
# Equity curves
# ---------------------------------------------------------------------------------------------


def equity_curve(
    trades: Sequence[ClosedTrade],
    close_time_ms: np.ndarray,
    closes: Mapping[str, np.ndarray],
    start_equity: float,
) -> EquityCurve:
    """Mark-to-market equity at every close time of the timeline (see the module docstring).

    ``closes[symbol]`` holds that symbol's close price at each timeline close time (forward-filled
    where the symbol had no candle; NaN before its first candle). Trades of symbols missing from
    ``closes`` are booked at their exit only.
    """
    t = np.asarray(close_time_ms, dtype=np.int64)
    n = t.size
    realized_step = np.zeros(n + 1)
    unrealized = np.zeros(n)
    for tr in trades:
        k_exit = int(np.searchsorted(t, tr.exit_time_ms, side="left"))
        realized_step[k_exit] += tr.net_pnl
        px = closes.get(tr.symbol)
        if px is None:
            continue
        k_entry = int(np.searchsorted(t, tr.entry_time_ms, side="left"))
        if k_entry >= k_exit:
            continue
        seg = px[k_entry:k_exit]
        mtm = tr.side.sign * tr.quantity * (seg - tr.entry_price) - tr.entry_fee
        unrealized[k_entry:k_exit] += np.where(np.isfinite(mtm), mtm, -tr.entry_fee)
    equity = start_equity + np.cumsum(realized_step[:n]) + unrealized
    return EquityCurve(time_ms=t, equity=equity)


def compute_metrics(
    trades: Sequence[ClosedTrade],
    curve: EquityCurve,
    *,
    start_equity: float,
    start_ms: int,
    end_ms: int,
) -> Metrics:
    """All summary figures of one set of trades and its equity curve over ``[start_ms, end_ms)``."""
    nets = [tr.net_pnl for tr in trades]
    n = len(nets)
    wins = sum(1 for p in nets if p > 0)
    losses = sum(1 for p in nets if p < 0)
    gross_profit = math.fsum(p for p in nets if p > 0)
    gross_loss = -math.fsum(p for p in nets if p < 0)
    net = math.fsum(nets)
    eq = np.concatenate(([start_equity], curve.equity))
    dd_abs, dd_pct = max_drawdown(eq)
    end_equity = float(curve.equity[-1]) if curve.equity.size else start_equity
    daily = daily_returns(curve.time_ms, curve.equity, start_equity)
    cagr = ratios.cagr_pct(start_equity, end_equity, end_ms - start_ms)
    avg_h, median_h = ratios.durations_h(trades)
    longs = ratios.side_split(trades, Side.LONG)
    shorts = ratios.side_split(trades, Side.SHORT)
    return Metrics(
        trades=n,
        wins=wins,
        losses=losses,
        win_rate=wins / n if n else None,
        profit_factor=profit_factor(nets),
        net_pnl=net,
        gross_profit=gross_profit,
        gross_loss=gross_loss,
        fees=math.fsum(tr.fees for tr in trades),
        funding=math.fsum(tr.funding for tr in trades),
        avg_trade=net / n if n else None,
        start_equity=float(start_equity),
        end_equity=end_equity,
        return_pct=(end_equity / start_equity - 1.0) * 100.0 if start_equity > 0 else None,
        max_drawdown=dd_abs,
        max_drawdown_pct=dd_pct * 100.0,
        sharpe=sharpe_ratio(daily),
        exposure=exposure(((tr.entry_time_ms, tr.exit_time_ms) for tr in trades), start_ms, end_ms),
        cagr_pct=cagr,
        sortino=ratios.sortino_ratio(daily),
        calmar=ratios.calmar_ratio(cagr, dd_pct * 100.0),
        avg_duration_h=avg_h,
        median_duration_h=median_h,
        long_trades=longs.trades,
        long_net_pnl=longs.net_pnl,
        long_win_rate=longs.win_rate,
        short_trades=shorts.trades,
        short_net_pnl=shorts.net_pnl,
        short_win_rate=shorts.win_rate,
    )


@dataclass(frozen=True, slots=True)
class MetricsReport:
    """Per-symbol metrics, the portfolio metrics, their equity curves and the fingerprint."""

    per_symbol: dict[str, Metrics]
    portfolio: Metrics
    portfolio_curve: EquityCurve
    symbol_curves: dict[str, EquityCurve]
    fingerprint: str
    benchmark: ratios.BuyAndHold | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint,
            "portfolio": self.portfolio.as_dict(),
            "per_symbol": {s: m.as_dict() for s, m in self.per_symbol.items()},
            "buy_and_hold": None if self.benchmark is None else self.benchmark.as_dict(),
        }


def summarize(
    trades: Sequence[ClosedTrade],
    symbols: Sequence[str],
    close_time_ms: np.ndarray,
    closes: Mapping[str, np.ndarray],
    initial_balance: float,
    *,
    start_ms: int,
    end_ms: int,
) -> MetricsReport:
    """Metrics of every symbol (equity base ``initial / N``) and of the whole portfolio."""
    n_sym = max(len(symbols), 1)
    share = initial_balance / n_sym
    per_symbol: dict[str, Metrics] = {}
    curves: dict[str, EquityCurve] = {}
    for sym in symbols:
        mine = [tr for tr in trades if tr.symbol == sym]
        curve = equity_curve(mine, close_time_ms, closes, share)
        curves[sym] = curve
        per_symbol[sym] = compute_metrics(mine, curve, start_equity=share, start_ms=start_ms, end_ms=end_ms)
    pcurve = equity_curve(trades, close_time_ms, closes, initial_balance)
    portfolio = compute_metrics(
        trades, pcurve, start_equity=initial_balance, start_ms=start_ms, end_ms=end_ms
    )
    return MetricsReport(
        per_symbol=per_symbol,
        portfolio=portfolio,
        portfolio_curve=pcurve,
        symbol_curves=curves,
        fingerprint=fingerprint(trades),
        benchmark=ratios.buy_and_hold(symbols, closes, initial_balance, end_ms - start_ms),
    )


# ---------------------------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------------------------


def _f(x: float) -> str:
    # ``+ 0.0`` folds -0.0 into 0.0 so that a sign-of-zero artefact cannot change the hash.
    return format(float(x) + 0.0, _FLOAT_FORMAT)


def canonical_trade_line(tr: ClosedTrade) -> str:
    """One trade as a fixed-order, comma-separated line (the unit the fingerprint hashes)."""
    return ",".join(
        (
            tr.symbol,
            tr.side.value,
            str(int(tr.entry_time_ms)),
            str(int(tr.exit_time_ms)),
            _f(tr.entry_price),
            _f(tr.exit_price),
            _f(tr.quantity),
            _f(tr.realized_pnl),
            _f(tr.entry_fee),
            _f(tr.exit_fee),
            _f(tr.funding),
            tr.reason.value,
        )
    )


def canonical_order(trades: Iterable[ClosedTrade]) -> list[ClosedTrade]:
    """Trades sorted by (entry time, symbol, exit time, side): independent of the order in which
    bots happened to report closes."""
    return sorted(trades, key=lambda t: (t.entry_time_ms, t.symbol, t.exit_time_ms, t.side.value))


def fingerprint(trades: Iterable[ClosedTrade]) -> str:
    """sha256 (hex) of the canonical serialisation of a trade list.

    Serialisation: the header ``perpbot-trades-v1`` and then one line per trade in canonical
    order (``canonical_order``: sorted by entry time, symbol, exit time, side) with the fields
    ``symbol, side, entry_time_ms, exit_time_ms, entry_price, exit_price, quantity, realized_pnl,
    entry_fee, exit_fee, funding, reason``; integers in decimal, floats with 12 significant digits
    (``format(x, ".12g")``), lines joined by ``\n``, UTF-8. Any change of any field of any trade
    changes the hash.
    """
    text = "\n".join([FINGERPRINT_VERSION, *(canonical_trade_line(t) for t in canonical_order(trades))])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
