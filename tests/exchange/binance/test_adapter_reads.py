"""Reads the live features and recovery depend on: OI and funding with SPEC §2.3 fallbacks, time
sync every 30 minutes, the 24 h ``exchangeInfo`` cache with its stale fallback, paged history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from perpbot.exchange.binance.placement import PAGE, paged
from tests.contract.harness import BinanceVenue

Start = Callable[..., Any]


async def test_open_interest_and_funding_fall_back_to_none(start_venue: Start) -> None:
    v: BinanceVenue = await start_venue()
    oi = await v.ex.open_interest("XRPUSDT")
    fr = await v.ex.funding_rate("XRPUSDT")
    assert oi is not None and oi > 0 and fr is not None
    hist = await v.ex.open_interest_history("XRPUSDT")
    assert len(hist) == 6 and all(x > 0 for _, x in hist)
    assert [t for t, _ in hist] == sorted(t for t, _ in hist) and hist[-1][0] % 900_000 == 0
    await v.inject(
        {"kind": "http_error", "status": 500, "endpoint": "/fapi/v1/openInterest", "count": 1},
        {"kind": "http_error", "status": 502, "endpoint": "/fapi/v1/premiumIndex", "count": 1},
        {"kind": "http_error", "status": 500, "endpoint": "/futures/data/openInterestHist", "count": 1},
    )
    assert await v.ex.open_interest_history("XRPUSDT") is None
    assert await v.ex.open_interest("XRPUSDT") is None
    assert await v.ex.funding_rate("XRPUSDT") is None


async def test_time_is_resynced_every_30_minutes_and_exchange_info_cached_24h(start_venue: Start) -> None:
    v: BinanceVenue = await start_venue(connect=False)
    now = [1_800_000_000_000]
    v.ex.rest.now_ms = lambda: now[0]
    await v.ex.symbol_filters("XRPUSDT")
    assert v.ex.rest.time_syncs == 1
    now[0] += 29 * 60_000
    await v.ex.balance()
    assert v.ex.rest.time_syncs == 1
    now[0] += 60_000
    await v.ex.balance()
    assert v.ex.rest.time_syncs == 2
    info = v.ex.rest._info
    await v.ex.symbol_filters("TRXUSDT")
    assert v.ex.rest._info is info  # cached
    now[0] += 24 * 3_600_000
    await v.inject({"kind": "http_error", "status": 503, "endpoint": "/fapi/v1/exchangeInfo", "count": 1})
    f = await v.ex.symbol_filters("XRPUSDT")  # refresh failed: the stale copy answers
    assert f.step_size == 0.1 and v.ex.rest._info is info
    await v.ex.symbol_filters("XRPUSDT")
    assert v.ex.rest._info is not info  # next call refreshed it


async def test_paging_follows_start_time_and_deduplicates_the_boundary() -> None:
    rows = [{"tranId": i, "incomeType": "X", "time": 1000 + i // 3} for i in range(2 * PAGE + 10)]
    calls: list[int] = []

    async def call(name: str, params: dict[str, Any]) -> Any:
        calls.append(params["startTime"])
        return [r for r in rows if r["time"] >= params["startTime"]][:PAGE]

    out = await paged(call, "fapiPrivateGetIncome", {"limit": PAGE}, 0, lambda r: r["tranId"])
    assert [r["tranId"] for r in out] == [r["tranId"] for r in rows]
    assert len(calls) == 3 and calls[1] == rows[PAGE - 1]["time"]


@pytest.mark.parametrize("working_type", ["CONTRACT_PRICE", "MARK_PRICE"])
async def test_conditionals_carry_working_type_and_price_protect(
    start_venue: Start, working_type: str
) -> None:
    from perpbot.domain.types import OrderSide, OrderType
    from perpbot.exchange.binance.adapter import BinanceExchange

    v: BinanceVenue = await start_venue()
    ex = BinanceExchange(v.ex.endpoints, v.ex.rest._creds, working_type=working_type, price_protect=True)
    try:
        await ex.market_order("XRPUSDT", OrderSide.BUY, 100.0, client_order_id="wt-in")
        price = await v.price("XRPUSDT")
        await ex.place_conditional(
            "XRPUSDT",
            OrderType.STOP_MARKET,
            OrderSide.SELL,
            100.0,
            round(price * 0.9, 4),
            client_algo_id="wt-sl",
        )
        sent = ex.rest.ex.last_request_body
        assert f"workingType={working_type}" in sent and "priceProtect=true" in sent
        assert "algoType=CONDITIONAL" in sent and "reduceOnly=true" in sent
    finally:
        await ex.close()
    with pytest.raises(ValueError):
        BinanceExchange(v.ex.endpoints, v.ex.rest._creds, working_type="LAST")


async def test_minus_4046_is_binance_s_answer_and_the_port_treats_it_as_done(start_venue: Start) -> None:
    from perpbot.exchange.errors import NO_NEED_TO_CHANGE_MARGIN_TYPE, ExchangeError

    v: BinanceVenue = await start_venue()
    await v.ex.set_isolated_margin("XRPUSDT")
    with pytest.raises(ExchangeError) as err:
        await v.ex.rest.call("fapiPrivatePostMarginType", {"symbol": "XRPUSDT", "marginType": "ISOLATED"})
    assert err.value.code == NO_NEED_TO_CHANGE_MARGIN_TYPE
    await v.ex.set_isolated_margin("XRPUSDT")  # the port: already isolated is success
