"""The four objective metrics, computed the same way for every window, trial and the defaults.

* ``net``: net PnL in USDT after fees and funding (sum over the window's trades);
* ``pf``: profit factor = gross profit / gross loss of net trade PnLs (capped at ``CAP`` when
  there is no loss, so a lucky two-trade window cannot score infinity);
* ``sharpe``: annualised (√365) mean / standard deviation of the daily returns;
* ``calmar``: annualised return / maximum drawdown of the daily-compounded-by-sum equity
  ``1 + cumsum(r)`` (capped at ``CAP`` without drawdown).

A trial with fewer than ``min_trades`` out-of-sample trades (default 50, SPEC §13 row 26) is
failed: its score would rest on too few trades to mean anything.
"""

from __future__ import annotations

import math

import numpy as np

from perpbot.errors import ConfigError

METRICS = ("net", "pf", "sharpe", "calmar")
DEFAULT_METRIC = "sharpe"
DEFAULT_MIN_TRADES = 50
CAP = 100.0
ANNUAL_DAYS = 365


def check_metric(name: str) -> str:
    if name not in METRICS:
        raise ConfigError(f"--metric {name!r}: unknown metric; choose one of {', '.join(METRICS)}")
    return name


def profit_factor(net: np.ndarray) -> float:
    gains = float(net[net > 0].sum())
    losses = float(-net[net < 0].sum())
    if losses <= 0:
        return CAP if gains > 0 else 0.0
    return min(gains / losses, CAP)


def sharpe(daily: np.ndarray) -> float:
    """Annualised Sharpe ratio of daily returns (0 for a flat or one-day series)."""
    if daily.size < 2:
        return 0.0
    sd = float(daily.std(ddof=1))
    return 0.0 if sd <= 0 else float(daily.mean()) / sd * math.sqrt(ANNUAL_DAYS)


def max_drawdown(daily: np.ndarray) -> float:
    """Largest fall of ``1 + cumsum(daily)`` from its running peak, as a fraction of the peak."""
    eq = 1.0 + np.concatenate([[0.0], np.cumsum(daily)])
    peak = np.maximum.accumulate(eq)
    return float(np.max((peak - eq) / np.where(peak > 0, peak, 1.0)))


def calmar(daily: np.ndarray) -> float:
    annual = float(daily.sum()) * ANNUAL_DAYS / max(daily.size, 1)
    dd = max_drawdown(daily)
    if dd <= 0:
        return CAP if annual > 0 else 0.0
    return max(min(annual / dd, CAP), -CAP)


def score(metric: str, net_pnl: np.ndarray, daily: np.ndarray, base: float) -> float:
    """The window's value of ``metric`` (net PnL in USDT = ``daily.sum() * base``)."""
    if metric == "net":
        return float(net_pnl.sum())
    if metric == "pf":
        return profit_factor(net_pnl)
    if metric == "sharpe":
        return sharpe(daily)
    if metric == "calmar":
        return calmar(daily)
    raise ConfigError(f"--metric {metric!r}: unknown metric; choose one of {', '.join(METRICS)}")


def summary(net_pnl: np.ndarray, daily: np.ndarray) -> dict[str, float | int]:
    """Every metric of one window, for the report."""
    return {
        "trades": int(net_pnl.size),
        "net": float(net_pnl.sum()),
        "pf": profit_factor(net_pnl),
        "sharpe": sharpe(daily),
        "calmar": calmar(daily),
        "max_drawdown": max_drawdown(daily),
    }
