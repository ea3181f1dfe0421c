"""The per-worker cache must give exactly what the backtest would compute itself."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from perpbot.backtest.runner import BacktestConfig, run_backtest
from perpbot.config import AppConfig, SignalParams
from perpbot.ml.features import feature_arrays
from perpbot.optimize.precompute import SymbolCache

from .conftest import SYMBOL

PARAMS = [
    SignalParams(),
    SignalParams(1.0, 3.5, 2, 0.0, 1.2),
    SignalParams(3.0, 1.0, 4, 35.0, 3.8),
]


@pytest.mark.parametrize("params", PARAMS)
def test_cached_arrays_equal_feature_arrays(market: pd.DataFrame, params: SignalParams) -> None:
    cache = SymbolCache.build(SYMBOL, market)
    got, want = cache.arrays(params), feature_arrays(market, params)
    assert set(got) == set(want)
    for key in want:
        assert np.array_equal(got[key], want[key], equal_nan=True), key


def test_backtest_with_cache_has_the_same_trades(market: pd.DataFrame) -> None:
    params = PARAMS[1]
    cache = SymbolCache.build(SYMBOL, market)
    app = AppConfig(symbols=(SYMBOL,), default_params=params)
    base = dict(symbols=(SYMBOL,), markets={SYMBOL: market}, use_ml=False)
    plain = asyncio.run(run_backtest(BacktestConfig(**base), app))
    cached = asyncio.run(
        run_backtest(
            BacktestConfig(
                **base, feature_arrays={SYMBOL: cache.arrays(params)}, symbol_filters={SYMBOL: cache.filters}
            ),
            app,
        )
    )
    assert plain.trades, "the synthetic market must produce trades for this check to mean anything"
    assert cached.fingerprint == plain.fingerprint
