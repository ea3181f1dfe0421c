"""The simulator's REST answers, parsed by unmodified ccxt 4.5.90 (binanceusdm)."""

from __future__ import annotations

import ccxt.pro
import numpy as np
import pytest

from perpbot.simulator.server import SimServer

SYM = "XRP/USDT:USDT"


async def test_load_markets_gives_linear_perpetuals_with_exchange_filters(ex: ccxt.pro.binanceusdm) -> None:
    markets = await ex.load_markets()
    m = markets[SYM]
    assert m["swap"] and m["linear"] and m["settle"] == "USDT" and m["active"]
    assert m["precision"]["price"] == 0.0001 and m["precision"]["amount"] == 0.1
    assert m["limits"]["cost"]["min"] == 5.0
    assert "TRX/USDT:USDT" in markets


async def test_balance_and_empty_positions(ex: ccxt.pro.binanceusdm) -> None:
    bal = await ex.fetch_balance()
    assert bal["USDT"]["total"] == 1000.0 and bal["USDT"]["free"] == 1000.0
    assert await ex.fetch_positions() == []


async def test_leverage_and_margin_mode(ex: ccxt.pro.binanceusdm) -> None:
    await ex.load_markets()
    res = await ex.set_leverage(5, SYM)
    assert res["leverage"] == 5 and res["symbol"] == "XRPUSDT"
    await ex.set_margin_mode("isolated", SYM)
    with pytest.raises(ccxt.MarginModeAlreadySet):
        await ex.set_margin_mode("isolated", SYM)


async def test_market_order_fills_at_next_candle_open_and_shows_everywhere(
    ex: ccxt.pro.binanceusdm, sim: SimServer
) -> None:
    await ex.load_markets()
    await ex.set_leverage(5, SYM)
    series = sim.market.series["XRPUSDT"]
    next_open = float(series.open[series.index_at(sim.replay.next_open_ms)])
    order = await ex.create_order(SYM, "market", "buy", 10, params={"newClientOrderId": "e2e-entry-1"})
    assert order["status"] == "closed" and order["filled"] == 10.0
    assert order["clientOrderId"] == "e2e-entry-1"
    assert order["average"] == pytest.approx(next_open * 1.0001)  # engine slippage: 1 bp adverse
    positions = await ex.fetch_positions()
    assert len(positions) == 1 and positions[0]["side"] == "long" and positions[0]["contracts"] == 10.0
    fetched = await ex.fetch_order(None, SYM, {"clientOrderId": "e2e-entry-1"})
    assert fetched["id"] == order["id"] and fetched["status"] == "closed"
    trades = await ex.fetch_my_trades(SYM)
    assert [t["order"] for t in trades] == [order["id"]]
    assert trades[0]["fee"]["cost"] == pytest.approx(10 * trades[0]["price"] * 0.0005)
    bal = await ex.fetch_balance()
    assert bal["USDT"]["used"] > 0
    assert await ex.fetch_open_orders(SYM) == []


async def test_stop_and_take_profit_go_to_the_algo_book(ex: ccxt.pro.binanceusdm, sim: SimServer) -> None:
    await ex.load_markets()
    await ex.create_order(SYM, "market", "buy", 10, params={"newClientOrderId": "t-entry"})
    last = sim.venue.mark("XRPUSDT")
    sl = await ex.create_order(
        SYM,
        "STOP_MARKET",
        "sell",
        10,
        None,
        {"stopPrice": round(last * 0.9, 4), "reduceOnly": True, "clientAlgoId": "t-sl"},
    )
    tp = await ex.create_order(
        SYM,
        "TAKE_PROFIT_MARKET",
        "sell",
        10,
        None,
        {"stopPrice": round(last * 1.1, 4), "reduceOnly": True, "clientAlgoId": "t-tp"},
    )
    assert sl["status"] == "open" and tp["status"] == "open"
    assert sl["triggerPrice"] == round(last * 0.9, 4)
    open_algo = await ex.fetch_open_orders(SYM, params={"trigger": True})
    assert {o["clientOrderId"] for o in open_algo} == {"t-sl", "t-tp"}
    got = await ex.fetch_order(None, SYM, {"trigger": True, "clientOrderId": "t-tp"})
    assert got["id"] == tp["id"] and got["status"] == "open"
    await ex.cancel_order(None, SYM, {"trigger": True, "clientOrderId": "t-sl"})
    left = await ex.fetch_open_orders(SYM, params={"trigger": True})
    assert [o["clientOrderId"] for o in left] == ["t-tp"]
    canceled = await ex.fetch_order(sl["id"], SYM, {"trigger": True})
    assert canceled["status"] == "canceled"


async def test_cancel_in_the_normal_book_of_a_filled_order_is_order_not_found(
    ex: ccxt.pro.binanceusdm,
) -> None:
    await ex.load_markets()
    order = await ex.create_order(SYM, "market", "buy", 10)
    with pytest.raises(ccxt.OrderNotFound):
        await ex.cancel_order(order["id"], SYM)
    with pytest.raises(ccxt.OrderNotFound):
        await ex.fetch_order(None, SYM, {"clientOrderId": "never-sent"})


async def test_ohlcv_and_funding_rate(ex: ccxt.pro.binanceusdm, sim: SimServer) -> None:
    await ex.load_markets()
    rows = await ex.fetch_ohlcv(SYM, "15m", limit=5)
    s = sim.market.series["XRPUSDT"]
    last = sim.venue.last_index("XRPUSDT")
    assert [r[0] for r in rows] == [int(t) for t in s.open_time[last - 4 : last + 1]]
    assert rows[-1][4] == float(s.close[last])
    assert rows[-1][0] + 15 * 60_000 == sim.venue.now_ms  # nothing after replay time
    marks = await ex.fetch_ohlcv(SYM, "15m", limit=5, params={"price": "mark"})
    assert [m[:5] for m in marks] == [r[:5] for r in rows] and all(m[5] == 0 for m in marks)
    fr = await ex.fetch_funding_rate(SYM)
    assert fr["fundingRate"] == float(s.funding[last]) and fr["markPrice"] == float(s.close[last])
    oi = await ex.fetch_open_interest(SYM)
    assert oi["openInterestAmount"] > 0


async def test_cancel_all_touches_only_its_own_book(ex: ccxt.pro.binanceusdm, sim: SimServer) -> None:
    await ex.load_markets()
    await ex.create_order(SYM, "market", "buy", 10)
    stop = round(sim.venue.mark("XRPUSDT") * 0.9, 4)
    await ex.create_order(SYM, "STOP_MARKET", "sell", 10, None, {"stopPrice": stop, "reduceOnly": True})
    await ex.cancel_all_orders(SYM)  # DELETE allOpenOrders: normal orders only
    assert len(await ex.fetch_open_orders(SYM, params={"trigger": True})) == 1
    await ex.cancel_all_orders(SYM, {"trigger": True})  # DELETE algoOpenOrders
    assert await ex.fetch_open_orders(SYM, params={"trigger": True}) == []


async def test_server_and_bare_engine_agree_on_every_fill(ex: ccxt.pro.binanceusdm, sim: SimServer) -> None:
    """The same orders at the same candles through ccxt + server and through a bare
    ``MatchingEngine`` built like the backtest's give identical fills and balances."""
    from perpbot.domain.types import OrderSide, OrderType
    from perpbot.exchange.known_filters import derived_filters
    from perpbot.exchange.sim.engine import MatchingEngine
    from perpbot.exchange.sim.settings import SimSettings

    s = sim.market.series["XRPUSDT"]
    first = sim.venue.offsets["XRPUSDT"]
    bare = MatchingEngine(
        SimSettings(initial_balance=1000.0),
        {"XRPUSDT": derived_filters("XRPUSDT", float(np.nanmedian(s.close)))},
    )
    bare.add_bars(
        "XRPUSDT",
        s.open_time[first:],
        s.open[first:],
        s.high[first:],
        s.low[first:],
        s.close[first:],
        s.funding[first:],
    )
    bare.process_bar("XRPUSDT", 0)
    await ex.load_markets()
    await ex.create_order(SYM, "market", "sell", 50)
    bare.market_order("XRPUSDT", OrderSide.SELL, 50.0)
    last = bare.last_price("XRPUSDT")
    sl, tp = round(last * 1.01, 4), round(last * 0.995, 4)
    await ex.create_order(SYM, "market", "buy", 50, None, {"stopLossPrice": sl, "reduceOnly": True})
    await ex.create_order(SYM, "market", "buy", 50, None, {"takeProfitPrice": tp, "reduceOnly": True})
    bare.place_algo("XRPUSDT", OrderType.STOP_MARKET, OrderSide.BUY, 50.0, sl)
    bare.place_algo("XRPUSDT", OrderType.TAKE_PROFIT_MARKET, OrderSide.BUY, 50.0, tp)
    for i in range(1, 97):
        sim.replay.advance(1)
        bare.process_bar("XRPUSDT", i)
    served = await ex.fetch_my_trades(SYM)
    expected = bare.fills("XRPUSDT")
    assert len(expected) >= 2
    assert [(t["price"], t["amount"], t["timestamp"]) for t in served] == [
        (f.price, f.quantity, f.time_ms) for f in expected
    ]
    assert (await ex.fetch_balance())["USDT"]["total"] == pytest.approx(bare.balance(), abs=1e-12)


async def test_funding_history_and_income(ex: ccxt.pro.binanceusdm, sim: SimServer) -> None:
    await ex.load_markets()
    rates = await ex.fetch_funding_rate_history(SYM, limit=5)
    s = sim.market.series["XRPUSDT"]
    assert len(rates) == 5 and all(r["timestamp"] % (8 * 3_600_000) == 0 for r in rates)
    assert rates[-1]["timestamp"] <= sim.venue.now_ms - 15 * 60_000
    assert rates[-1]["fundingRate"] == float(s.funding[s.index_at(rates[-1]["timestamp"])])
    await ex.create_order(SYM, "market", "buy", 100)
    first_open = sim.replay.next_open_ms
    sim.replay.advance(40)  # crosses a funding time (every 8 h = 32 candles)
    settled = [t for t in range(first_open, sim.replay.next_open_ms, 15 * 60_000) if t % (8 * 3_600_000) == 0]
    paid = await ex.fetch_funding_history(SYM)
    assert [p["timestamp"] for p in paid] == settled and all(p["amount"] != 0 for p in paid)
    ledger = await ex.fetch_ledger()
    assert {e["info"]["incomeType"] for e in ledger} == {"COMMISSION", "FUNDING_FEE"}
    assert sum(e["amount"] * (1 if e["direction"] == "in" else -1) for e in ledger) == pytest.approx(
        float((await ex.fetch_balance())["info"]["totalWalletBalance"]) - 1000.0  # no uPnL in the wallet
    )
