"""What a trial does not change, computed once per symbol and worker (issue 12 §3).

Of the backtest's inputs only the rule signal depends on the searched parameters: the signal
threshold, ADX gate and volume multiple decide ``signal``/``vol_surge`` and with them the two
features ``signal_strength`` and ``side``; the ATR multiples only move the bot's stops. The
indicators, the 24 other features, the market arrays and the exchange filters are the same for
every trial, so :class:`SymbolCache` computes them once and :meth:`SymbolCache.arrays` rebuilds
only the signal columns per trial (``rule_signal`` over precomputed indicators: a few vectorised
comparisons). A test pins ``arrays(p)`` equal to ``features.feature_arrays(market, p)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from perpbot.config import SignalParams
from perpbot.data.schema import OHLCV
from perpbot.domain.types import SymbolFilters
from perpbot.exchange.known_filters import derived_filters
from perpbot.ml.features import feature_arrays
from perpbot.strategy.indicators import compute_indicators
from perpbot.strategy.signal import LONG, SHORT, rule_signal

# feature_arrays keys that depend on the parameters (rebuilt per trial).
PARAM_DEPENDENT = ("signal", "long_score", "short_score", "vol_surge", "signal_strength", "side")


@dataclass(frozen=True, slots=True, eq=False)
class SymbolCache:
    """One symbol's parameter-independent inputs."""

    symbol: str
    market: pd.DataFrame
    base: dict[str, np.ndarray]  # feature_arrays of the defaults; PARAM_DEPENDENT keys replaced per trial
    indicators: dict[str, np.ndarray]
    close: np.ndarray
    volume: np.ndarray
    filters: SymbolFilters

    @classmethod
    def build(cls, symbol: str, market: pd.DataFrame) -> SymbolCache:
        o, h, lo, c, v = (market[name].to_numpy(dtype=np.float64) for name in OHLCV)
        base = feature_arrays(market, SignalParams())
        for arr in base.values():
            arr.flags.writeable = False
        ind = compute_indicators(o, h, lo, c, v)
        # Same derivation as the runner's default (median close), done once instead of per trial.
        filters = derived_filters(symbol, float(np.nanmedian(c)))
        return cls(symbol, market, base, ind, c, v, filters)

    def arrays(self, params: SignalParams) -> dict[str, np.ndarray]:
        """``feature_arrays(market, params)``, from the cache (the module docstring)."""
        sig = rule_signal(self.indicators, self.close, self.volume, params)
        strength = np.where(
            sig.signal == LONG, sig.long_score, np.where(sig.signal == SHORT, sig.short_score, 0)
        )
        out = dict(self.base)
        out.update(
            signal=sig.signal,
            long_score=sig.long_score,
            short_score=sig.short_score,
            vol_surge=sig.vol_surge,
            signal_strength=strength.astype(np.float64),
            side=(sig.signal == LONG).astype(np.float64),
        )
        return out
