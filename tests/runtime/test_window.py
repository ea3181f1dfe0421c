"""Live contexts equal the backtest's, and correlation alignment waits a bounded time."""

from __future__ import annotations

import asyncio

import numpy as np

from perpbot.config import load_config
from perpbot.data.synth import synth_market
from perpbot.exchange.binance.market_stream import Candle
from perpbot.ml.features import build_feature_frame, context_from_row, contexts_arrays
from perpbot.runtime.window import MarketWindow
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
