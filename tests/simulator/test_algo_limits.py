"""The algo book's per-symbol limit (exchangeInfo ``MAX_NUM_ALGO_ORDERS``), enforced as Binance does."""

from __future__ import annotations

import ccxt.pro
import pytest

from perpbot.simulator.server import SimServer

SYM = "XRP/USDT:USDT"


async def _stop(ex: ccxt.pro.binanceusdm, symbol: str, price: float, cid: str) -> dict:
    params = {"stopPrice": price, "reduceOnly": True, "clientAlgoId": cid}
    return await ex.create_order(symbol, "STOP_MARKET", "sell", 10, None, params)


async def test_the_eleventh_open_algo_order_of_a_symbol_is_refused(
    ex: ccxt.pro.binanceusdm, sim: SimServer
) -> None:
    """Binance refuses a conditional order beyond ``MAX_NUM_ALGO_ORDERS`` (10) open on the symbol
    with -4045 "Reach max stop order limit."; a client leaking stale stops meets it live, where
    its next protective order is then refused."""
    markets = await ex.load_markets()
    limit = next(
        int(f["limit"]) for f in markets[SYM]["info"]["filters"] if f["filterType"] == "MAX_NUM_ALGO_ORDERS"
    )
    last = sim.venue.mark("XRPUSDT")
    placed = [await _stop(ex, SYM, round(last * (0.9 - k * 0.001), 4), f"lim-{k}") for k in range(limit)]
    with pytest.raises(ccxt.ExchangeError, match='"code":-4045'):
        await _stop(ex, SYM, round(last * 0.8, 4), "lim-over")
    assert len(sim.venue.open_algos("XRPUSDT")) == limit
    # the limit is per symbol, and a cancelled order frees its place
    trx_last = sim.venue.mark("TRXUSDT")
    await _stop(ex, "TRX/USDT:USDT", round(trx_last * 0.9, 5), "lim-trx")
    await ex.cancel_order(placed[0]["id"], SYM, {"trigger": True})
    await _stop(ex, SYM, round(last * 0.8, 4), "lim-again")
