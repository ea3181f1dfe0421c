"""A trial: fresh backtest per block, deterministic, failed below the minimum trade count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from perpbot.config import AppConfig, SignalParams
from perpbot.data.schema import model_dir
from perpbot.optimize import space
from perpbot.optimize.trial import Evaluator
from tests.backtest.conftest import tiny_onnx_model

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


def test_ml_filter_is_used_only_with_ml(market: pd.DataFrame, tmp_path: Path) -> None:
    root = tmp_path / "models"
    tiny_onnx_model(model_dir(root, SYMBOL))
    app = AppConfig(symbols=(SYMBOL,))
    kw = dict(folds=3, metric="sharpe", min_trades=5)
    on = Evaluator.build(SYMBOL, market, app, use_ml=True, model_dir=root, **kw)  # type: ignore[arg-type]
    off = Evaluator.build(SYMBOL, market, app, model_dir=root, **kw)  # type: ignore[arg-type]
    assert on.model_sha256 is not None and off.model_sha256 is None
    assert on.trades(LOOSE).n < off.trades(LOOSE).n  # the filter rejects signals with RSI > ~47.5
