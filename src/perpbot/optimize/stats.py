"""Overfitting statistics of a parameter search: PBO by CSCV and the deflated Sharpe ratio.

PBO (Bailey, Borwein, López de Prado & Zhu, "The probability of backtest overfitting", 2015):
the trials' out-of-sample daily returns form a ``T × N`` matrix; its rows are cut into ``S``
contiguous blocks; for every way of choosing ``S/2`` blocks as a pseudo in-sample set (the rest is
the pseudo out-of-sample set), the trial with the best in-sample Sharpe is located in the
out-of-sample ranking. PBO is the share of splits where that winner ranks at or below the median
(logit of its relative rank ≤ 0). A value near 0 means the search's winner tends to stay a winner;
0.5 or more means picking the best trial is no better than picking at random.

Deflated Sharpe ratio (Bailey & López de Prado, "The deflated Sharpe ratio", 2014): the
probability that the best trial's true Sharpe exceeds the Sharpe that the best of ``N``
unskilled trials would show by luck (expected maximum of ``N`` draws, from the variance of the
trials' Sharpe ratios), corrected for the returns' skewness, kurtosis and length. Sharpe ratios
here are per day, not annualised, as the formula requires.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
MAX_BLOCKS = 16
MIN_BLOCK_DAYS = 4


def _rank_of(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """1-based rank (ties averaged) of ``values[r, idx[r]]`` within each row ``r``."""
    chosen = values[np.arange(values.shape[0]), idx][:, None]
    below = (values < chosen).sum(axis=1)
    equal = (values == chosen).sum(axis=1)
    return below + (equal + 1) / 2.0


@dataclass(frozen=True, slots=True)
class PBOResult:
    pbo: float | None
    blocks: int
    splits: int
    logits_median: float | None
    reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "pbo": self.pbo,
            "blocks": self.blocks,
            "splits": self.splits,
            "logit_median": self.logits_median,
            "note": self.reason,
        }


def pbo_cscv(returns: np.ndarray, max_blocks: int = MAX_BLOCKS) -> PBOResult:
    """PBO of a ``T × N`` matrix of per-period returns (columns = trials)."""
    t, n = returns.shape
    if n < 2:
        return PBOResult(None, 0, 0, None, "needs at least 2 trials")
    s = min(max_blocks, t // MIN_BLOCK_DAYS)
    s -= s % 2
    if s < 2:
        return PBOResult(None, 0, 0, None, f"{t} periods are too few to split into blocks")
    edges = np.linspace(0, t, s + 1).astype(int)
    sums = np.stack([returns[a:b].sum(axis=0) for a, b in itertools.pairwise(edges)])  # s × n
    sq = np.stack([(returns[a:b] ** 2).sum(axis=0) for a, b in itertools.pairwise(edges)])
    cnt = np.diff(edges).astype(np.float64)
    combos = np.array([c for c in itertools.combinations(range(s), s // 2)])
    sel = np.zeros((len(combos), s))
    sel[np.arange(len(combos))[:, None], combos] = 1.0

    def sharpe(mask: np.ndarray) -> np.ndarray:
        m = mask @ cnt
        mean = (mask @ sums) / m[:, None]
        var = (mask @ sq) / m[:, None] - mean**2
        sd = np.sqrt(np.maximum(var * m[:, None] / np.maximum(m[:, None] - 1, 1), 0.0))
        return np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), 0.0)

    r_is, r_oos = sharpe(sel), sharpe(1.0 - sel)
    best = np.argmax(r_is, axis=1)
    omega = _rank_of(r_oos, best) / (n + 1)
    logits = np.log(omega / (1.0 - omega))
    return PBOResult(float(np.mean(logits <= 0)), s, len(combos), float(np.median(logits)))


@dataclass(frozen=True, slots=True)
class DSRResult:
    dsr: float | None
    sharpe: float  # per period
    sharpe_annual: float
    expected_max_sharpe: float  # per period, SR0
    trials: int
    periods: int
    skew: float
    kurtosis: float

    def as_dict(self) -> dict[str, object]:
        return {
            "dsr": self.dsr,
            "sharpe_daily": self.sharpe,
            "sharpe_annual": self.sharpe_annual,
            "expected_max_sharpe_daily": self.expected_max_sharpe,
            "trials": self.trials,
            "periods": self.periods,
            "skew": self.skew,
            "kurtosis": self.kurtosis,
        }


def _sr(x: np.ndarray) -> float:
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return 0.0 if sd <= 0 else float(x.mean()) / sd


def deflated_sharpe(best: np.ndarray, all_trials: np.ndarray) -> DSRResult:
    """DSR of the ``best`` return series given every trial's series (``T × N``, best included)."""
    nd = NormalDist()
    n = int(all_trials.shape[1])
    t = int(best.size)
    sr = _sr(best)
    srs = np.array([_sr(all_trials[:, j]) for j in range(n)])
    if n > 1:
        v = float(srs.var(ddof=1))
        sr0 = math.sqrt(v) * (
            (1 - EULER_GAMMA) * nd.inv_cdf(1 - 1 / n) + EULER_GAMMA * nd.inv_cdf(1 - 1 / (n * math.e))
        )
    else:
        sr0 = 0.0
    sd = float(best.std()) if t > 1 else 0.0
    if sd > 0:
        z = (best - best.mean()) / sd
        skew, kurt = float(np.mean(z**3)), float(np.mean(z**4))
    else:
        skew, kurt = 0.0, 3.0
    denom = 1 - skew * sr + (kurt - 1) / 4 * sr**2
    dsr = None
    if t > 1 and denom > 0 and sd > 0:
        dsr = nd.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(denom))
    return DSRResult(dsr, sr, sr * math.sqrt(365), sr0, n, t, skew, kurt)
