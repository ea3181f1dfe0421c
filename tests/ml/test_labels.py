"""Barrier labels (SPEC §5, §14 "Labels" rows): SL before TP, timeout = 0, config multiples."""

from __future__ import annotations

import time

import numpy as np
import pytest

from perpbot.ml.labels import Outcome, barrier_labels, barrier_outcome

RISING = ([100.5, 101.5, 102.5, 103.5], [99.8, 100.6, 101.4, 102.2])
FALLING = ([100.2, 99.6, 99.0, 98.6], [99.5, 99.0, 98.4, 97.0])
FLAT = ([100.4, 100.3, 100.5, 100.4], [99.7, 99.6, 99.8, 99.7])


@pytest.mark.parametrize(
    ("path", "expected"),
    [(RISING, Outcome.TP), (FALLING, Outcome.SL), (FLAT, Outcome.TIMEOUT)],
)
def test_long_entry_100_tp_103_sl_98_5(path: tuple[list[float], list[float]], expected: Outcome) -> None:
    highs, lows = path
    assert barrier_outcome(100.0, 98.5, 103.0, "LONG", highs, lows) is expected


def test_timeout_is_label_zero() -> None:
    assert Outcome.TIMEOUT.label == 0
    assert Outcome.SL.label == 0
    assert Outcome.TP.label == 1


def test_short_falling_path_hits_tp() -> None:
    highs = [100.1, 99.5, 98.4, 97.5]
    lows = [99.4, 98.6, 97.6, 96.8]
    assert barrier_outcome(100.0, 101.5, 97.0, -1, highs, lows) is Outcome.TP


def test_both_barriers_in_one_bar_counts_as_sl() -> None:
    assert barrier_outcome(100.0, 98.5, 103.0, 1, [103.5], [98.0]) is Outcome.SL
    assert barrier_outcome(100.0, 101.5, 97.0, -1, [102.0], [96.5]) is Outcome.SL


def test_barrier_on_wrong_side_is_rejected() -> None:
    with pytest.raises(ValueError):
        barrier_outcome(100.0, 103.0, 98.5, 1, [100.0], [100.0])


def _reference(high, low, close, atr, sides, sl_mult, tp_mult, lookahead):
    out = np.full(close.size, np.nan)
    for i in range(close.size - lookahead):
        if sides[i] == 0 or not np.isfinite(atr[i]) or atr[i] <= 0:
            continue
        e, a, s = close[i], atr[i], sides[i]
        sl, tp = e - s * sl_mult * a, e + s * tp_mult * a
        o = barrier_outcome(
            e, sl, tp, int(s), high[i + 1 : i + 1 + lookahead], low[i + 1 : i + 1 + lookahead]
        )
        out[i] = o.label
    return out


def test_vectorised_matches_reference_on_random_walk() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    high = close * (1 + np.abs(rng.normal(0, 0.003, n)))
    low = close * (1 - np.abs(rng.normal(0, 0.003, n)))
    atr = close * 0.004
    atr[::97] = 0.0
    atr[5::101] = np.nan
    sides = rng.choice([-1, 0, 1], size=n)
    got = barrier_labels(high, low, close, atr, sides, 1.5, 2.0, lookahead=24)
    ref = _reference(high, low, close, atr, sides, 1.5, 2.0, 24)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_array_equal(got[ok], ref[ok])
    assert 0 < np.nanmean(got) < 1  # both classes present, so the comparison means something


def test_not_labelable_rows_are_nan() -> None:
    n = 40
    close = np.full(n, 100.0)
    atr = np.full(n, 1.0)
    atr[3] = 0.0
    atr[4] = np.nan
    sides = np.ones(n, dtype=np.int8)
    sides[5] = 0
    lab = barrier_labels(close + 0.1, close - 0.1, close, atr, sides, 2.0, 2.0, lookahead=24)
    assert np.isnan(lab[[3, 4, 5]]).all()
    assert np.isnan(lab[n - 24 :]).all()  # fewer than 24 future bars
    assert (lab[[0, 1, 2, 6, n - 25]] == 0).all()  # flat path: timeout -> 0


def test_multiples_change_the_label() -> None:
    # Price rises 2.5 ATR: TP at 2.0 ATR is reached, TP at 3.0 ATR is not (timeout -> 0).
    close = np.array([100.0] + [100.0 + 0.5 * k for k in range(1, 30)])
    high, low = close + 0.01, close - 0.01
    high[6:] = 100.0 + 2.5  # capped rise
    close[6:] = 102.0
    atr = np.ones_like(close)
    sides = np.zeros_like(close)
    sides[0] = 1
    assert barrier_labels(high, low, close, atr, sides, 1.5, 2.0, lookahead=24)[0] == 1.0
    assert barrier_labels(high, low, close, atr, sides, 1.5, 3.0, lookahead=24)[0] == 0.0


def test_fast_on_40k_rows() -> None:
    rng = np.random.default_rng(1)
    n = 40_000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    high, low = close * 1.002, close * 0.998
    atr = close * 0.003
    sides = rng.choice([-1, 0, 1], size=n)
    t0 = time.perf_counter()
    barrier_labels(high, low, close, atr, sides, 2.0, 2.0)
    assert time.perf_counter() - t0 < 0.5
