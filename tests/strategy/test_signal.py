"""Rule signal and ATR stops (SPEC §3, §14 "Signal" rows), on hand-made indicator rows."""

from __future__ import annotations

import numpy as np
import pytest

from perpbot.config import SignalParams
from perpbot.domain.types import Side
from perpbot.strategy.indicators import INDICATOR_KEYS, compute_indicators
from perpbot.strategy.signal import (
    HOLD,
    LONG,
    SHORT,
    HoldReason,
    atr_stops,
    last_signal,
    rule_signal,
)

DESIGN = SignalParams(signal_threshold=3, adx_threshold=0.0, vol_multiplier=1.5)


def neutral(n: int = 2) -> dict[str, np.ndarray]:
    """Indicator rows that score 0 on both sides (RSI 50, no cross, inside bands, no EMA stack)."""
    row = {
        "rsi": 50.0,
        "macd": 0.0,
        "macd_signal": 0.0,
        "macd_hist": 0.0,
        "bb_upper": 110.0,
        "bb_mid": 100.0,
        "bb_lower": 90.0,
        "ema9": 100.0,
        "ema21": 100.0,
        "ema50": 100.0,
        "atr": 1.0,
        "stoch_k": 50.0,
        "stoch_d": 50.0,
        "adx": 30.0,
        "vol_ma20": 1000.0,
    }
    assert set(row) == set(INDICATOR_KEYS)
    return {k: np.full(n, v) for k, v in row.items()}


def macd_cross(ind: dict[str, np.ndarray], up: bool) -> None:
    """Previous row below (above) the signal line, last row above (below)."""
    sign = 1.0 if up else -1.0
    ind["macd"][-2:] = [-0.5 * sign, 0.5 * sign]
    ind["macd_signal"][-2:] = 0.0


def run(ind: dict[str, np.ndarray], params: SignalParams, volume: float = 1000.0, close: float = 100.0):
    n = len(ind["rsi"])
    return rule_signal(ind, np.full(n, close), np.full(n, volume), params)


@pytest.fixture
def spec_long_row() -> dict[str, np.ndarray]:
    """SPEC §14: RSI 20, MACD cross up, ADX 15 (volume 2× MA is passed by the caller)."""
    ind = neutral()
    ind["rsi"][-1] = 20.0
    macd_cross(ind, up=True)
    ind["adx"][:] = 15.0
    return ind


def test_spec_row_long_at_design_point(spec_long_row: dict[str, np.ndarray]) -> None:
    sf = run(spec_long_row, DESIGN, volume=2000.0)
    assert sf.signal[-1] == LONG and sf.side_at(-1) is Side.LONG
    assert sf.long_score[-1] == 3 and sf.short_score[-1] == 0 and sf.vol_surge[-1]
    assert sf.hold_reason[-1] == HoldReason.NONE


def test_spec_row_hold_with_adx_gate_25(spec_long_row: dict[str, np.ndarray]) -> None:
    gated = SignalParams(signal_threshold=3, adx_threshold=25.0, vol_multiplier=1.5)
    sf = run(spec_long_row, gated, volume=2000.0)
    assert sf.signal[-1] == HOLD and sf.side_at(-1) is None
    assert sf.hold_reason[-1] == HoldReason.ADX_GATE
    assert sf.long_score[-1] == 3  # the gate does not change the score


def test_adx_above_gate_passes(spec_long_row: dict[str, np.ndarray]) -> None:
    spec_long_row["adx"][:] = 25.0  # "ADX < threshold → HOLD": equality passes
    sf = run(spec_long_row, SignalParams(signal_threshold=3, adx_threshold=25.0, vol_multiplier=1.5), 2000.0)
    assert sf.signal[-1] == LONG


def test_volume_multiplier_is_configurable(spec_long_row: dict[str, np.ndarray]) -> None:
    """Score 3 needs a surge; 2× MA is no surge under VOL_MULTIPLIER 2.5 (the project default)."""
    sf = run(spec_long_row, SignalParams(signal_threshold=3, adx_threshold=0.0, vol_multiplier=2.5), 2000.0)
    assert sf.signal[-1] == HOLD and not sf.vol_surge[-1]
    assert sf.hold_reason[-1] == HoldReason.NO_VOLUME


def test_adx_all_nan_never_blocks_and_never_errors(spec_long_row: dict[str, np.ndarray]) -> None:
    spec_long_row["adx"][:] = np.nan
    sf = run(spec_long_row, SignalParams(signal_threshold=3, adx_threshold=25.0, vol_multiplier=1.5), 2000.0)
    assert sf.signal[-1] == LONG
    assert set(np.unique(sf.signal)) <= {LONG, SHORT, HOLD}


def test_strong_score_passes_without_volume() -> None:
    ind = neutral()
    ind["rsi"][-1] = 20.0
    macd_cross(ind, up=True)
    ind["bb_lower"][-1] = 101.0  # close 100 < lower → +1, score 4 = threshold + 1
    sf = run(ind, DESIGN, volume=10.0)
    assert not sf.vol_surge[-1] and sf.long_score[-1] == 4 and sf.signal[-1] == LONG


def test_short_side_mirrors_long() -> None:
    ind = neutral()
    ind["rsi"][-1] = 80.0
    macd_cross(ind, up=False)
    ind["ema9"][-1], ind["ema21"][-1], ind["ema50"][-1] = 97.0, 98.0, 99.0
    ind["stoch_k"][-1], ind["stoch_d"][-1] = 90.0, 95.0
    ind["bb_upper"][-1] = 99.0
    sf = run(ind, DESIGN, volume=10.0)
    assert sf.short_score[-1] == 6 and sf.long_score[-1] == 0 and sf.signal[-1] == SHORT


def test_both_sides_qualify_is_hold() -> None:
    """Long: MACD cross up (2). Short: close above the upper band (1) + EMA stack down (1)."""
    ind = neutral()
    macd_cross(ind, up=True)
    ind["bb_upper"][-1] = 99.0
    ind["ema9"][-1], ind["ema21"][-1], ind["ema50"][-1] = 97.0, 98.0, 99.0
    params = SignalParams(signal_threshold=2, adx_threshold=0.0, vol_multiplier=1.5)
    sf = run(ind, params, volume=5000.0)
    assert sf.long_score[-1] == 2 and sf.short_score[-1] == 2
    assert sf.signal[-1] == HOLD and sf.hold_reason[-1] == HoldReason.BOTH_SIDES
    # Either side alone would have traded: removing the short points gives LONG.
    ind["bb_upper"][-1] = 110.0
    assert run(ind, params, volume=5000.0).signal[-1] == LONG


def test_each_rule_scores_its_points() -> None:
    cases = [
        ("rsi", 34.9, 1, 0),
        ("rsi", 65.1, 0, 1),
        ("bb_lower", 100.5, 1, 0),
        ("bb_upper", 99.5, 0, 1),
    ]
    for key, value, long_pts, short_pts in cases:
        ind = neutral()
        ind[key][-1] = value
        sf = run(ind, DESIGN)
        assert (sf.long_score[-1], sf.short_score[-1]) == (long_pts, short_pts), key
    ind = neutral()
    ind["ema9"][-1], ind["ema21"][-1], ind["ema50"][-1] = 103.0, 102.0, 101.0
    assert run(ind, DESIGN).long_score[-1] == 1
    ind = neutral()
    ind["stoch_k"][-1], ind["stoch_d"][-1] = 10.0, 5.0
    assert run(ind, DESIGN).long_score[-1] == 1
    ind["stoch_k"][-1], ind["stoch_d"][-1] = 10.0, 15.0  # K < 20 but not above D
    assert run(ind, DESIGN).long_score[-1] == 0


def test_nan_comparisons_are_false_and_first_row_never_crosses() -> None:
    ind = {k: np.full(3, np.nan) for k in INDICATOR_KEYS}
    sf = rule_signal(ind, np.full(3, 100.0), np.full(3, 1e9), DESIGN)
    assert (sf.long_score == 0).all() and (sf.short_score == 0).all()
    assert (sf.signal == HOLD).all() and not sf.vol_surge.any()
    assert (sf.hold_reason == HoldReason.NO_SCORE).all()
    one = neutral(1)
    one["macd"][0] = 1.0  # above the signal line, but there is no previous row to cross from
    assert run(one, DESIGN).long_score[0] == 0


def test_output_dtypes() -> None:
    sf = run(neutral(5), DESIGN)
    assert sf.signal.dtype == np.int8 and sf.long_score.dtype == np.int8 and sf.short_score.dtype == np.int8
    assert sf.vol_surge.dtype == np.bool_ and len(sf) == 5


def test_row_t_reads_rows_t_and_t_minus_1_only() -> None:
    rng = np.random.default_rng(3)
    n = 800
    close = 2.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    high, low = close * 1.004, close * 0.996
    volume = rng.lognormal(14, 0.8, n)
    ind = compute_indicators(close, high, low, close, volume)
    loose = SignalParams(signal_threshold=2, adx_threshold=20.0, vol_multiplier=1.2)
    full = rule_signal(ind, close, volume, loose)
    assert (full.signal != HOLD).sum() > 10  # the comparison below is not vacuous
    for t in range(60, n):
        sl = slice(t - 1, t + 1)
        pair = rule_signal({k: a[sl] for k, a in ind.items()}, close[sl], volume[sl], loose)
        assert pair.signal[-1] == full.signal[t]
        assert pair.long_score[-1] == full.long_score[t] and pair.short_score[-1] == full.short_score[t]
    last = last_signal(ind, close, volume, loose)
    assert (
        len(last) == 1 and last.signal[0] == full.signal[-1] and last.hold_reason[0] == full.hold_reason[-1]
    )


def test_atr_stops_long_and_short() -> None:
    p = SignalParams(atr_sl_mult=1.5, atr_tp_mult=4.0)
    assert atr_stops(100.0, 2.0, Side.LONG, p) == (97.0, 108.0)
    assert atr_stops(100.0, 2.0, Side.SHORT, p) == (103.0, 92.0)
    sl, tp = atr_stops(np.array([10.0, 20.0]), np.array([1.0, 2.0]), Side.LONG, SignalParams())
    np.testing.assert_array_equal(sl, [8.0, 16.0])
    np.testing.assert_array_equal(tp, [12.0, 24.0])


def test_stoch_rsi_tie_on_a_strictly_rising_rsi_scores_no_point() -> None:
    """Issue 11 §1: while the RSI makes a new 14-bar high on every bar, the raw stochastic is 100
    on every bar, so K = D = 100 in SPEC §3's arithmetic and "K < D" must not award a SHORT point
    (nor "K > D" a LONG one). Float rounding leaves K and D a few ulps apart here; the comparison
    must not be decided by that noise."""
    from perpbot.strategy.indicators import stoch_rsi

    rsi = 30.0 + np.cumsum(np.random.default_rng(0).uniform(0.01, 0.5, 80))
    k, d = stoch_rsi(rsi)
    ready = ~np.isnan(d)
    assert np.allclose(k[ready], 100.0, atol=1e-9) and np.allclose(d[ready], 100.0, atol=1e-9)
    assert (k[ready] != d[ready]).any(), "the fixture must contain rounding differences to be a test"
    ind = neutral(len(rsi))
    ind["stoch_k"], ind["stoch_d"] = k, d
    sf = run(ind, SignalParams(signal_threshold=1, adx_threshold=0.0, vol_multiplier=1.5))
    assert not sf.short_score.any() and not sf.long_score.any()
    assert (sf.signal == HOLD).all()


def test_stoch_rsi_real_difference_still_scores() -> None:
    """The tie tolerance only absorbs rounding: K below D by 0.01 point above 80 is a SHORT point."""
    ind = neutral()
    ind["stoch_k"][:] = 90.0
    ind["stoch_d"][:] = 90.01
    assert run(ind, DESIGN).short_score[-1] == 1
    ind["stoch_k"][:] = 10.01
    ind["stoch_d"][:] = 10.0
    assert run(ind, DESIGN).long_score[-1] == 1


@pytest.mark.realdata
def test_recorded_xrpusdt_tie_is_no_longer_a_short(real_data_dir) -> None:
    """Issue 11: XRPUSDT 2025-06-08 06:15 scored its third SHORT point from K < D by 2e-14
    (K = 89.11177664275442, D = 89.11177664275444, equal in exact arithmetic) and became a
    spurious SHORT. With the tie rule it is HOLD. The pinned real-data backtest fingerprint does
    not change: XRPUSDT's kill switch had already tripped (2025-05-05), so that signal never
    traded under the defaults."""
    import pandas as pd

    from perpbot.config import load_config
    from perpbot.data.store import load_market

    m = load_market(real_data_dir / "xrpusdt" / "combined_15m.parquet")
    ind = compute_indicators(m.open, m.high, m.low, m.close, m.volume)
    sf = rule_signal(
        ind, m.close.to_numpy(), m.volume.to_numpy(), load_config({}, None).params_for("XRPUSDT")
    )
    i = m.index.get_loc(pd.Timestamp("2025-06-08 06:15", tz="UTC"))
    assert 0 < abs(ind["stoch_k"][i] - ind["stoch_d"][i]) < 1e-12
    assert sf.signal[i] == HOLD
