"""Min/max decimation: far fewer points, and every extreme the eye could see survives."""

from __future__ import annotations

import numpy as np
import pytest

from perpbot.backtest.decimate import minmax_index


def _walk(n: int, seed: int) -> np.ndarray:
    return 1000.0 + np.cumsum(np.random.default_rng(seed).normal(0.0, 1.0, n))


def test_short_series_kept_whole() -> None:
    assert minmax_index([np.arange(10.0)], buckets=5).tolist() == list(range(10))


def test_year_of_15m_equity_is_thinned_and_keeps_global_extremes() -> None:
    y = _walk(35_040, seed=3)
    y[12_345] = 5_000.0  # a one-candle spike and a one-candle crash must both be drawn
    y[23_456] = -5_000.0
    idx = minmax_index([y], buckets=1_000)
    assert idx.size <= 4 * 1_000 + 2
    assert {0, y.size - 1, 12_345, 23_456} <= set(idx.tolist())
    assert np.all(np.diff(idx) > 0)


def test_every_bucket_keeps_its_min_and_max() -> None:
    """Per pixel bucket, the decimated line spans exactly the full line's vertical range."""
    y = _walk(50_003, seed=5)  # not a multiple of the bucket size: the short last bucket counts
    buckets = 700
    idx = minmax_index([y], buckets=buckets)
    size = -(-y.size // buckets)
    for start in range(0, y.size, size):
        chunk = y[start : start + size]
        kept = y[idx[(idx >= start) & (idx < start + size)]]
        assert kept.min() == chunk.min() and kept.max() == chunk.max()


def test_several_series_share_the_union_of_their_extremes() -> None:
    a, b = _walk(20_000, 1), _walk(20_000, 2)
    idx = minmax_index([a, b], buckets=100)
    kept = set(idx.tolist())
    assert int(np.argmax(a)) in kept and int(np.argmin(a)) in kept
    assert int(np.argmax(b)) in kept and int(np.argmin(b)) in kept


def test_nans_never_win_and_do_not_break() -> None:
    y = _walk(10_000, 7)
    y[:3_000] = np.nan  # e.g. a symbol without candles before its listing
    idx = minmax_index([y], buckets=100)
    assert int(np.nanargmax(y)) in idx and int(np.nanargmin(y)) in idx


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        minmax_index([np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match="buckets"):
        minmax_index([np.zeros(3)], buckets=0)
