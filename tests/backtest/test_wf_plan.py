"""Walk-forward planning (``wf_plan``): K + 1 equal chronological blocks, block 0 trains only."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from perpbot.backtest.wf_plan import MIN_FOLD_BARS, check_fold_windows, fold_windows
from perpbot.data.schema import BAR_MS
from perpbot.errors import ConfigError


def test_fold_windows_are_contiguous_equal_blocks(markets4: dict[str, pd.DataFrame]) -> None:
    windows = fold_windows(markets4, 3, None, None)
    n = len(markets4["XRPUSDT"])  # all four share the same open times
    first = int(markets4["XRPUSDT"].index.asi8[0])
    assert len(windows) == 3
    assert windows[0][0] == first + round(n / 4) * BAR_MS  # block 0 is training only
    for (a, b), (c, _) in itertools.pairwise(windows):
        assert b == c and a < b
    assert windows[-1][1] == int(markets4["XRPUSDT"].index.asi8[-1]) + BAR_MS


def test_too_many_folds_fail_before_training_naming_the_largest_k(markets4: dict[str, pd.DataFrame]) -> None:
    days = len(markets4["XRPUSDT"]) * BAR_MS // (MIN_FOLD_BARS * BAR_MS)  # one-day blocks that fit
    assert check_fold_windows(markets4, 3, None, None) == fold_windows(markets4, 3, None, None)
    with pytest.raises(ConfigError, match=r"fewer than 96 \(one day\).*use --walk-forward \d+ or fewer"):
        check_fold_windows(markets4, days + 5, None, None)
