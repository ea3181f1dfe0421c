"""Live contexts equal the backtest's, and correlation alignment waits a bounded time."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from perpbot.config import load_config
from perpbot.data.synth import synth_market
from perpbot.exchange.binance.market_stream import Candle
from perpbot.ml.features import build_feature_frame, context_from_row, contexts_arrays
from perpbot.runtime.window import MarketWindow, Micro, oi_seed
from tests.support.ml import LOOSE_ENV


def _candles(frame, symbol: str, suffix: str = "") -> list[Candle]:
    times = frame.index.as_unit("ms").asi8
    cols = [frame[f"{c}{suffix}"].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    return [Candle(symbol, int(t), *(float(c[i]) for c in cols)) for i, t in enumerate(times)]


def test_the_live_context_equals_the_batch_context_of_the_same_candle() -> None:
    cfg = load_config({**LOOSE_ENV, "SYMBOLS": "XRPUSDT"}, env_file=None)
    market = synth_market(days=14, seed=3, symbol="XRPUSDT")
    market["oi_change"] = 0.0
    market["funding_rate"] = 0.0
    batch = build_feature_frame(market, cfg.params_for("XRPUSDT"))
    arrays = contexts_arrays(batch)
    w = MarketWindow(cfg)
    w.preload("XRPUSDT", _candles(market, "XRPUSDT"))
    w.preload("BTCUSDT", _candles(market, "BTCUSDT", "_btc"))
    w.preload("ETHUSDT", _candles(market, "ETHUSDT", "_eth"))
    checked = signals = 0
    for i in range(len(market) - 200, len(market)):
        t = int(arrays.open_time_ms[i])
        live = w.context("XRPUSDT", upto_open_ms=t)
        want = context_from_row("XRPUSDT", t, arrays.values[i], arrays.index)
        assert live is not None
        assert live.signal is want.signal and live.long_score == want.long_score
        assert live.short_score == want.short_score and live.vol_surge == want.vol_surge
        np.testing.assert_allclose(live.features, want.features, rtol=0, atol=1e-9, equal_nan=True)
        assert abs(live.atr - want.atr) <= 1e-9 and live.close == want.close
        checked += 1
        signals += want.signal is not None
    assert checked == 200 and signals > 0


async def test_the_features_see_btc_eth_candles_that_came_after_the_signal_step() -> None:
    # ``prepare`` may run before BTC/ETH of the same open time arrived: ``features`` then takes
    # their closes again. Prepared once they were there, the first step's closes are final and
    # reused: both ways give the same numbers, bit for bit.
    cfg = load_config({**LOOSE_ENV, "SYMBOLS": "XRPUSDT"}, env_file=None)
    market = synth_market(days=14, seed=4, symbol="XRPUSDT")
    w = MarketWindow(cfg)
    for sym, suffix in (("XRPUSDT", ""), ("BTCUSDT", "_btc"), ("ETHUSDT", "_eth")):
        w.preload(sym, _candles(market, sym, suffix)[:-1])
    last = {
        sym: _candles(market, sym, sfx)[-1]
        for sym, sfx in (("XRPUSDT", ""), ("BTCUSDT", "_btc"), ("ETHUSDT", "_eth"))
    }
    t = last["XRPUSDT"].open_ms
    await w.add(last["XRPUSDT"])
    early = w.prepare("XRPUSDT", t)
    await w.add(last["BTCUSDT"])
    await w.add(last["ETHUSDT"])
    late = w.prepare("XRPUSDT", t)
    assert early is not None and late is not None and not early.aligned and late.aligned
    w.features(early)
    w.features(late)
    assert early.market.columns["close_btc"][-1] == last["BTCUSDT"].close
    assert early.part is not None and late.part is not None
    for name, values in late.part.data.items():
        assert np.array_equal(early.part.data[name], values, equal_nan=True), name


async def test_alignment_waits_for_btc_and_eth_of_the_same_open_time() -> None:
    cfg = load_config({"SYMBOLS": "XRPUSDT"}, env_file=None)
    w = MarketWindow(cfg, align_wait_s=2.0)
    for s in ("BTCUSDT", "ETHUSDT"):
        await w.add(Candle(s, 0, 1, 1, 1, 1, 1))

    async def late() -> None:
        await asyncio.sleep(0.05)
        await w.add(Candle("BTCUSDT", 900_000, 1, 1, 1, 1, 1))
        await asyncio.sleep(0.05)
        await w.add(Candle("ETHUSDT", 900_000, 1, 1, 1, 1, 1))

    task = asyncio.create_task(late())
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await w.align(900_000) is True
    assert 0.09 <= loop.time() - t0 < 1.0 and w.align_timeouts == 0
    await task


async def test_alignment_gives_up_after_its_bound_and_uses_the_last_known_candle() -> None:
    cfg = load_config({"SYMBOLS": "XRPUSDT"}, env_file=None)
    w = MarketWindow(cfg, align_wait_s=0.1)
    for s, price in (("BTCUSDT", 50.0), ("ETHUSDT", 5.0)):
        await w.add(Candle(s, 0, price, price, price, price, 1))
    for k in range(2):
        await w.add(Candle("XRPUSDT", k * 900_000, 1, 1, 1, 1, 1))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await w.align(900_000) is False
    assert 0.1 <= loop.time() - t0 < 0.5 and w.align_timeouts == 1
    frame = w.frame("XRPUSDT")
    assert frame["close_btc"].tolist() == [50.0, 50.0]  # forward-filled, as the batch features do
    assert frame["close_eth"].tolist() == [5.0, 5.0]


def test_oi_seed_gives_the_successive_changes_on_the_candles_that_closed_at_each_snapshot() -> None:
    # SPEC §14: OI history 1.00M, 1.01M, … (6 rows) → 5 changes, the first 0.01; 1 row / error → [].
    bar = 900_000
    levels = [1.00e6, 1.01e6, 1.0201e6, 0.0, 2.0e6, 1.9e6]
    rows = [(bar * (10 + k), v) for k, v in enumerate(levels)]
    seed = oi_seed(rows)
    assert [t for t, _ in seed] == [bar * (9 + k) for k in range(1, 6)]  # open = snapshot − 1 bar
    changes = [c for _, c in seed]
    assert changes[0] == pytest.approx(0.01) and changes[1] == pytest.approx(0.01)
    assert changes[2] == -1.0 and changes[3] == 0.0  # a non-positive previous value gives 0
    assert changes[4] == pytest.approx(-0.05)
    assert oi_seed(rows[:1]) == [] and oi_seed([]) == []


def test_seeded_changes_land_only_on_candles_the_window_holds() -> None:
    cfg = load_config({"SYMBOLS": "XRPUSDT"}, env_file=None)
    w = MarketWindow(cfg)
    w.preload("XRPUSDT", [Candle("XRPUSDT", k * 900_000, 1, 1, 1, 1, 1) for k in range(3)])
    assert w.seed_oi("XRPUSDT", [(900_000, 0.02), (1_800_000, -0.01), (2_700_000, 0.5)]) == 2
    assert list(w.frame("XRPUSDT")["oi_change"]) == [0.0, 0.02, -0.01]


async def test_the_window_keeps_the_last_size_candles_in_order_across_many_appends() -> None:
    # The rows live in one array that slides its live part to the front when full: whatever the
    # number of appends, the window is the last ``size`` candles in open-time order, and OI/funding
    # stay on the candle they were set for.
    cfg = load_config({"SYMBOLS": "XRPUSDT"}, env_file=None)
    w = MarketWindow(cfg, size=5)
    for k in range(23):
        await w.add(Candle("XRPUSDT", k * 900_000, k, k + 1, k - 1, k + 0.5, 10 * k))
        w.set_micro("XRPUSDT", k * 900_000, Micro(oi_change=k / 100, funding_rate=k / 1000))
        await w.add(Candle("XRPUSDT", k * 900_000, -1, -1, -1, -1, -1))  # a duplicate is dropped
    frame = w.frame("XRPUSDT")
    assert w.count("XRPUSDT") == 5 and w.last_open("XRPUSDT") == 22 * 900_000
    assert frame["close"].tolist() == [k + 0.5 for k in range(18, 23)]
    assert frame["oi_change"].tolist() == [k / 100 for k in range(18, 23)]
    assert frame["funding_rate"].tolist() == [k / 1000 for k in range(18, 23)]
    w.set_micro("XRPUSDT", 3 * 900_000, Micro(oi_change=9.0))  # no longer held: ignored
    assert 9.0 not in w.frame("XRPUSDT")["oi_change"].tolist()


@pytest.mark.parametrize("btc_held", ["all", "missing one", "fewer", "newer too", "none"])
async def test_btc_closes_are_the_last_candle_opened_at_or_before_each_open_time(btc_held: str) -> None:
    # The window's BTC column: at each of the primary's open times, the close of the last BTC
    # candle opened at or before it (a gap forward-filled, NaN before the first), whether BTC holds
    # exactly those candles (the usual case, read as one slice) or not.
    cfg = load_config({"SYMBOLS": "XRPUSDT"}, env_file=None)
    w = MarketWindow(cfg, size=8)
    bar = 900_000
    for k in range(10):
        await w.add(Candle("XRPUSDT", k * bar, 1, 1, 1, 1, 1))
    btc = {
        "all": range(10),
        "missing one": [k for k in range(10) if k != 6],
        "fewer": range(5, 10),
        "newer too": range(12),
        "none": [],
    }[btc_held]
    for k in btc:
        await w.add(Candle("BTCUSDT", k * bar, 0, 0, 0, 100.0 + k, 1))
    got = w.arrays("XRPUSDT", upto_open_ms=9 * bar).columns["close_btc"]
    held = list(btc)[-8:]  # the window keeps the last ``size`` candles of each symbol
    want = [max((100.0 + k for k in held if k <= t), default=np.nan) for t in range(2, 10)]
    np.testing.assert_array_equal(got, want)
