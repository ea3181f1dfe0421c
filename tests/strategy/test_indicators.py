"""Indicators (SPEC §3, §14 "Indicators" row): TA-Lib numbers, the composed Stochastic RSI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from perpbot.strategy.indicators import INDICATOR_KEYS, _windows, compute_indicators, window_mean_std


def random_bars(n: int, seed: int) -> dict[str, np.ndarray]:
    """A random walk with consistent OHLC (high ≥ open/close ≥ low) and positive volume."""
    rng = np.random.default_rng(seed)
    close = 2.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.004, n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = rng.lognormal(14.0, 0.6, n)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


@pytest.fixture(scope="module")
def bars100() -> dict[str, np.ndarray]:
    return random_bars(100, 1)


@pytest.fixture(scope="module")
def ind100(bars100: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return compute_indicators(**bars100)


def test_spec_row_100_random_bars(ind100: dict[str, np.ndarray]) -> None:
    rsi = ind100["rsi"][~np.isnan(ind100["rsi"])]
    assert rsi.size > 50 and (rsi >= 0).all() and (rsi <= 100).all()
    for key in ("macd", "macd_signal", "macd_hist"):
        assert np.isfinite(ind100[key][-1])
    ok = ~np.isnan(ind100["bb_upper"])
    assert ok.sum() == 81 and (ind100["bb_upper"][ok] >= ind100["bb_lower"][ok]).all()
    adx = ind100["adx"][~np.isnan(ind100["adx"])]
    assert adx.size > 50 and (adx >= 0).all()


def test_keys_dtype_length_and_no_nan_at_the_end(ind100: dict[str, np.ndarray]) -> None:
    assert tuple(ind100) == INDICATOR_KEYS
    for key, arr in ind100.items():
        assert arr.dtype == np.float64 and arr.shape == (100,), key
        assert np.isfinite(arr[-1]), key


def test_recursive_indicators_are_talib(
    bars100: dict[str, np.ndarray], ind100: dict[str, np.ndarray]
) -> None:
    c, h, lo = bars100["close"], bars100["high"], bars100["low"]
    macd, sig, hist = talib.MACD(c, 12, 26, 9)
    expected = {
        "rsi": talib.RSI(c, 14),
        "macd": macd,
        "macd_signal": sig,
        "macd_hist": hist,
        "ema9": talib.EMA(c, 9),
        "ema21": talib.EMA(c, 21),
        "ema50": talib.EMA(c, 50),
        "atr": talib.ATR(h, lo, c, 14),
        "adx": talib.ADX(h, lo, c, 14),
    }
    for key, ref in expected.items():
        np.testing.assert_array_equal(ind100[key], ref, err_msg=key)


def test_the_talib_functions_called_are_not_the_pandas_wrappers(bars100: dict[str, np.ndarray]) -> None:
    # pandas is imported here, so TA-Lib's public functions type-check their arguments on every
    # call (~10 µs each, nine per live candle); the ones called are the functions they wrap, with
    # the same outputs (the test above compares those to the public ones).
    from perpbot.strategy.indicators import TALIB_FUNCTIONS, _talib

    assert hasattr(talib.MACD, "__wrapped__")  # the premise: a wrapper exists
    for name in TALIB_FUNCTIONS:
        assert getattr(_talib(), name) is getattr(talib, name).__wrapped__, name
    c = bars100["close"]
    np.testing.assert_array_equal(_talib().RSI(c, timeperiod=14), talib.RSI(c, timeperiod=14))


def test_windowed_means_match_talib_bbands_and_sma() -> None:
    bars = random_bars(3000, 2)
    ind = compute_indicators(**bars)
    upper, mid, lower = talib.BBANDS(bars["close"], 20, 2.0, 2.0, 0)
    for key, ref in (("bb_upper", upper), ("bb_mid", mid), ("bb_lower", lower)):
        np.testing.assert_allclose(ind[key], ref, rtol=1e-11, atol=0, equal_nan=True, err_msg=key)
    np.testing.assert_allclose(
        ind["vol_ma20"], talib.SMA(bars["volume"], 20), rtol=1e-11, atol=0, equal_nan=True
    )


def test_stoch_rsi_follows_the_spec_definition_not_talib_stochrsi() -> None:
    bars = random_bars(600, 3)
    ind = compute_indicators(**bars)
    rsi = pd.Series(talib.RSI(bars["close"], 14))
    lo, hi = rsi.rolling(14).min(), rsi.rolling(14).max()
    raw = 100.0 * (rsi - lo) / (hi - lo)
    k = raw.rolling(3).mean()
    d = k.rolling(3).mean()
    np.testing.assert_allclose(ind["stoch_k"], k.to_numpy(), atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(ind["stoch_d"], d.to_numpy(), atol=1e-9, equal_nan=True)
    # TA-Lib's STOCHRSI fastk is the unsmoothed stochastic: it must differ from the SPEC's K.
    fastk, _ = talib.STOCHRSI(bars["close"], 14, 14, 3, 0)
    assert np.nanmax(np.abs(fastk - ind["stoch_k"])) > 5.0
    ok = ~np.isnan(ind["stoch_k"])
    assert (ind["stoch_k"][ok] >= -1e-9).all() and (ind["stoch_k"][ok] <= 100 + 1e-9).all()


def test_flat_prices_give_exact_bands_and_zero_stochastic() -> None:
    """TA-Lib's running sums put the bands 7e-15 below a flat close (a spurious 'close > upper')."""
    bars = random_bars(200, 4)
    for key in ("open", "high", "low", "close"):
        bars[key] = np.concatenate([bars[key], np.full(40, 2.3456)])
    bars["volume"] = np.concatenate([bars["volume"], np.full(40, 1000.0)])
    ind = compute_indicators(**bars)
    assert ind["bb_upper"][-1] == ind["bb_lower"][-1] == 2.3456
    assert ind["vol_ma20"][-1] == 1000.0
    assert ind["stoch_k"][-1] == 0.0 and ind["stoch_d"][-1] == 0.0


def test_window_mean_std_depends_on_window_contents_only() -> None:
    x = random_bars(500, 5)["volume"]
    m_full, s_full = window_mean_std(x, 20)
    m_tail, s_tail = window_mean_std(x[-60:], 20)
    np.testing.assert_array_equal(m_full[-41:], m_tail[-41:])
    np.testing.assert_array_equal(s_full[-41:], s_tail[-41:])


def test_short_input_is_all_nan_not_an_error() -> None:
    ind = compute_indicators(**random_bars(10, 6))
    assert all(np.isnan(ind[k]).all() for k in ("macd", "adx", "ema50", "bb_mid", "stoch_d"))


def test_the_tail_of_the_windowed_means_is_bit_identical_to_the_full_series() -> None:
    # compute_indicators(tail=k) (the live bot's last rows) skips the windowed means of earlier
    # rows only: the last k rows equal the full computation bit for bit, the recursive TA-Lib
    # indicators are untouched, and the skipped rows are NaN (never a half-computed number).
    rng = np.random.default_rng(11)
    c = 100 + np.cumsum(rng.normal(0, 1, 700))
    h, lo, v = c + rng.random(700), c - rng.random(700), rng.random(700) * 1000
    full = compute_indicators(c, h, lo, c, v)
    for k in (1, 2, 3, 50, 577, 700, 5000):
        part = compute_indicators(c, h, lo, c, v, tail=k)
        for key in INDICATOR_KEYS:
            assert np.array_equal(part[key][-k:], full[key][-k:], equal_nan=True), (k, key)
        if k < 600:
            assert np.isnan(part["bb_mid"][:-k]).all() and np.isnan(part["vol_ma20"][:-k]).all()


def test_last_rows_narrows_the_bands_and_stochastic_but_not_the_volume_ma() -> None:
    # The live bot reads the Bollinger bands and the Stochastic RSI at its last two rows only,
    # the volume MA over the whole z-score suffix: ``last_rows`` computes the former on fewer rows,
    # bit-identical there, and leaves the suffix of the volume MA (and TA-Lib's series) as ``tail``.
    rng = np.random.default_rng(12)
    c = 100 + np.cumsum(rng.normal(0, 1, 700))
    h, lo, v = c + rng.random(700), c - rng.random(700), rng.random(700) * 1000
    full = compute_indicators(c, h, lo, c, v)
    tail = compute_indicators(c, h, lo, c, v, tail=300)
    part = compute_indicators(c, h, lo, c, v, tail=300, last_rows=2)
    short = ("bb_upper", "bb_mid", "bb_lower", "stoch_k", "stoch_d")
    for key in INDICATOR_KEYS:
        rows = 2 if key in short else 300
        assert np.array_equal(part[key][-rows:], full[key][-rows:], equal_nan=True), key
        if key not in short:
            assert np.array_equal(part[key], tail[key], equal_nan=True), key
    assert all(np.isnan(part[key][:-2]).all() for key in ("bb_mid", "stoch_d"))
    assert np.isfinite(part["vol_ma20"][-300:]).all()


@pytest.mark.parametrize(("n", "period", "step"), [(30, 20, 1), (20, 20, 1), (7, 3, 1), (40, 3, 3)])
def test_the_windows_are_numpys_sliding_windows_read_only(n: int, period: int, step: int) -> None:
    x = np.random.default_rng(n).random(n * step)[::step]
    win = _windows(x, period)
    assert np.array_equal(win, np.lib.stride_tricks.sliding_window_view(x, period))
    with pytest.raises(ValueError):
        win[0, 0] = 1.0


@pytest.mark.parametrize("rows_per_pass", [1, 7, 4096])
def test_window_means_do_not_depend_on_the_block_of_rows(
    monkeypatch: pytest.MonkeyPatch, rows_per_pass: int
) -> None:
    """Issue 13: the windows are reduced a block of rows at a time to bound the temporaries; the
    numbers must be the ones of a single block, bit for bit (NaN windows included)."""
    from perpbot.strategy import indicators

    rng = np.random.default_rng(13)
    x = 100.0 + np.cumsum(rng.normal(size=5000))
    x[[40, 2000, 4999]] = np.nan
    x[100:130] = x[100]
    monkeypatch.setattr(indicators, "WINDOW_ROWS_PER_PASS", 10**9)
    whole = [window_mean_std(x, p, tail=t) for p in (3, 20) for t in (None, 300)]
    monkeypatch.setattr(indicators, "WINDOW_ROWS_PER_PASS", rows_per_pass)
    blocks = [window_mean_std(x, p, tail=t) for p in (3, 20) for t in (None, 300)]
    for (m0, s0), (m1, s1) in zip(whole, blocks, strict=True):
        np.testing.assert_array_equal(m0.view(np.int64), m1.view(np.int64))
        np.testing.assert_array_equal(s0.view(np.int64), s1.view(np.int64))
