"""``MatchingEngine.intrabar_path``: the path the streams show is the path that triggers orders."""

from __future__ import annotations

import numpy as np

from perpbot.domain.types import OrderSide, OrderType, SymbolFilters
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.settings import SimSettings

F = {"X": SymbolFilters("X", 0.01, 0.1, 0.1, 5.0)}
T = np.arange(4, dtype=np.int64) * 900_000
OPEN, HIGH, LOW, CLOSE = (
    [10.0, 10.0, 10.0, 10.0],
    [10.0, 10.6, 10.6, 10.6],
    [10.0, 9.5, 9.5, 9.5],
    [10.0, 10.2, 9.8, 10.0],
)


def _engine(path: str = "pessimistic") -> MatchingEngine:
    e = MatchingEngine(SimSettings(intrabar_path=path, slippage_bps=0.0), F)
    e.add_bars("X", T, OPEN, HIGH, LOW, CLOSE)
    e.process_bar("X", 0)
    return e


def test_flat_account_follows_the_candle_colour() -> None:
    e = _engine()
    assert e.intrabar_path("X", 1) == (10.0, 9.5, 10.6, 10.2)  # closes up: low first
    assert e.intrabar_path("X", 2) == (10.0, 10.6, 9.5, 9.8)  # closes down: high first


def test_a_long_position_sees_the_adverse_extreme_first_and_its_stop_fires_there() -> None:
    e = _engine()
    e.market_order("X", OrderSide.BUY, 10.0)
    assert e.intrabar_path("X", 1) == (10.0, 9.5, 10.6, 10.2)
    e.place_algo("X", OrderType.STOP_MARKET, OrderSide.SELL, 10.0, 9.6)
    e.place_algo("X", OrderType.TAKE_PROFIT_MARKET, OrderSide.SELL, 10.0, 10.5)
    e.process_bar("X", 1)
    assert [f.price for f in e.fills("X")][1] == 9.6  # the first point reached on that path


def test_a_short_position_sees_the_high_first() -> None:
    e = _engine()
    e.market_order("X", OrderSide.SELL, 10.0)
    assert e.intrabar_path("X", 1) == (10.0, 10.6, 9.5, 10.2)
