"""A trial: fresh backtest per block, deterministic, failed below the minimum trade count."""

from __future__ import annotations

import numpy as np
import pandas as pd

from perpbot.config import AppConfig, SignalParams
from perpbot.optimize import space
from perpbot.optimize.trial import Evaluator

from .conftest import SYMBOL

LOOSE = SignalParams(1.5, 2.5, 2, 0.0, 1.2)


def evaluator(market: pd.DataFrame, min_trades: int = 5) -> Evaluator:
    return Evaluator.build(
        SYMBOL, market, AppConfig(symbols=(SYMBOL,)), folds=3, metric="sharpe", min_trades=min_trades
    )


def test_every_trade_lives_inside_one_block(market: pd.DataFrame) -> None:
    ev = evaluator(market)
    table = ev.trades(LOOSE)
    assert table.n > 10
    bounds = np.array(ev.folds.bounds)
    block = np.searchsorted(bounds, table.entry_ms, side="right") - 1
    # a block's run closes what is open at its last candle (END_OF_DATA): exit before the next block
    assert np.all(table.exit_ms <= bounds[block + 1])


def test_same_parameters_same_outcome(market: pd.DataFrame) -> None:
    ev = evaluator(market)
    values = space.from_signal_params(LOOSE)
    a, b = ev.evaluate(values, LOOSE), ev.evaluate(values, LOOSE)
    assert a.user_attrs() == b.user_attrs()
    assert a.oos_trades == sum(a.fold_oos_trades)


def test_too_few_trades_fail_the_trial(market: pd.DataFrame) -> None:
    ev = evaluator(market, min_trades=10_000)
    out = ev.evaluate(space.from_signal_params(LOOSE), LOOSE)
    assert out.failed == f"{out.oos_trades} out-of-sample trades < minimum 10000"
