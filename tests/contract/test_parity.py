"""The two venues agree by construction: the same calls on the same market give the same fills,
commissions, realised PnL, positions and income, to the last digit Binance reports."""

from __future__ import annotations

from perpbot.domain.types import OrderSide, OrderType
from tests.contract.harness import BinanceVenue, SimulatorPool, SimVenue


async def _script(v: SimVenue | BinanceVenue) -> tuple[object, ...]:
    ex = v.ex
    await ex.set_leverage("XRPUSDT", 4)
    await ex.market_order("XRPUSDT", OrderSide.BUY, 300.0, client_order_id="par-in")
    price = await v.price("XRPUSDT")
    await ex.place_conditional(
        "XRPUSDT",
        OrderType.TAKE_PROFIT_MARKET,
        OrderSide.SELL,
        300.0,
        round(price * 1.003, 4),
        client_algo_id="par-tp",
    )
    await ex.market_order("TRXUSDT", OrderSide.SELL, 500.0, client_order_id="par-trx")
    await v.advance(3)
    await ex.market_order("TRXUSDT", OrderSide.BUY, 500.0, reduce_only=True, client_order_id="par-trx-out")
    fills = [
        (f.symbol, f.side, f.price, f.quantity, round(f.commission, 8), round(f.realized_pnl, 8), f.time_ms)
        for s in ("XRPUSDT", "TRXUSDT")
        for f in await ex.user_trades(s)
    ]
    income = [
        (r.symbol, r.income_type, round(r.income, 8), r.time_ms)
        for s in ("XRPUSDT", "TRXUSDT")
        for r in await ex.income_history(s, 0)
    ]
    return (fills, income, await ex.position("XRPUSDT"), round(await ex.balance(), 6))


async def test_same_calls_same_answers(sim_pool: SimulatorPool) -> None:
    sim_v = SimVenue()
    await sim_v.start()
    try:
        expected = await _script(sim_v)
    finally:
        await sim_v.close()
    proc = sim_pool.take()
    b = BinanceVenue(proc)
    try:
        await b.start()
        got = await _script(b)
    finally:
        await b.close()
        sim_pool.release(proc)
    assert got == expected
    assert len(expected[0]) == 4  # type: ignore[arg-type]  # XRP entry + take-profit, TRX in and out
