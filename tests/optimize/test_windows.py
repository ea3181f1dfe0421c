"""Anchored folds, the too-few-candles error, and the purge/embargo of trade attribution."""

from __future__ import annotations

import numpy as np
import pytest

from perpbot.data.schema import BAR_MS
from perpbot.errors import InsufficientDataError
from perpbot.ml.splits import EMBARGO
from perpbot.optimize.windows import DAY_MS, TradeTable, daily_returns, is_mask, make_folds, oos_mask

T0 = 1_700_006_400_000  # a UTC midnight


def times(n: int) -> np.ndarray:
    return T0 + BAR_MS * np.arange(n, dtype=np.int64)


def test_blocks_are_equal_and_anchored() -> None:
    f = make_folds("XRPUSDT", times(96 * 40), 3)
    assert f.k == 3
    assert f.bounds[0] == T0 and f.bounds[-1] == T0 + 96 * 40 * BAR_MS
    assert np.all(np.diff(f.bounds) == 96 * 10 * BAR_MS)
    assert f.is_end(2) == f.bounds[2] - EMBARGO * BAR_MS
    assert f.oos(3) == (f.bounds[3], f.bounds[4])


def test_too_few_candles_names_symbol_and_folds() -> None:
    with pytest.raises(InsufficientDataError, match=r"XRPUSDT: 3000 candles are too few for 5 folds"):
        make_folds("XRPUSDT", times(3000), 5)


def test_in_sample_is_purged_and_embargoed_out_of_sample_by_entry() -> None:
    f = make_folds("XRPUSDT", times(96 * 40), 3)
    b1 = f.bounds[1]
    cut = f.is_end(1)
    table = TradeTable(
        entry_ms=np.array([T0, cut - 10 * BAR_MS, cut - 5 * BAR_MS, b1, f.bounds[2] - BAR_MS]),
        exit_ms=np.array([T0 + BAR_MS, cut - BAR_MS, b1 + BAR_MS, b1 + 4 * BAR_MS, f.bounds[2] + 8 * BAR_MS]),
        net=np.array([1.0, 2.0, 4.0, 8.0, 16.0]),
    )
    # in-sample of fold 1: only trades whose exit is before the embargoed cut
    assert is_mask(table, f, 1).tolist() == [True, True, False, False, False]
    # out-of-sample of fold 1: trades entered in [b1, b2), whatever their exit
    assert oos_mask(table, f, 1).tolist() == [False, False, False, True, True]
    assert oos_mask(table, f).tolist() == [False, False, False, True, True]


def test_daily_returns_book_on_exit_day() -> None:
    table = TradeTable(
        entry_ms=np.array([T0, T0]), exit_ms=np.array([T0 + 1, T0 + DAY_MS + 5]), net=np.array([10.0, -5.0])
    )
    d = daily_returns(table, np.array([True, True]), T0, T0 + 3 * DAY_MS, 1000.0)
    assert d.tolist() == [0.01, -0.005, 0.0]
