"""The ``late_events`` and ``swap_events`` faults: user-stream events really arrive late and out of
order on the socket, and every held event still arrives (once), counted when it is delivered."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import ccxt.pro
import pytest

from perpbot.simulator.faults import parse_faults
from perpbot.simulator.server import SimServer
from tests.simulator.conftest import ccxt_client
from tests.simulator.test_ws_market import _recv, _wait_for

SYM = "XRP/USDT:USDT"


def _tag(ev: dict[str, Any]) -> str:
    """``NEW``, ``TRADE 40/40`` (last / cumulative quantity), ``ACCOUNT``, ``ALGO NEW``."""
    if ev["e"] == "ACCOUNT_UPDATE":
        return "ACCOUNT"
    o = ev["o"]
    if ev["e"] == "ALGO_UPDATE":
        return f"ALGO {o['X']}"
    if o["x"] == "TRADE":
        return f"TRADE {float(o['l']):g}/{float(o['z']):g}"
    return o["x"]


async def _events(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[tuple[str, float]]:
    """The next ``n`` frames, with their arrival time (monotonic seconds)."""
    out = []
    for _ in range(n):
        out.append((_tag(await _recv(ws)), time.monotonic()))
    return out


async def _trade_with_faults(
    start_sim: Callable[..., Any], faults: list[dict[str, Any]], qty: float, max_fill: float
) -> tuple[SimServer, ccxt.pro.binanceusdm, aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    sim = await start_sim(max_fill_qty_per_execution=max_fill)
    http = aiohttp.ClientSession(base_url=f"http://127.0.0.1:{sim.port}")
    async with http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": sim.cfg.api_key}) as r:
        key = (await r.json())["listenKey"]
    ws = await http.ws_connect(f"/private/ws?listenKey={key}")
    await _wait_for(lambda: sim.private_hub.conns)
    async with http.post("/sim/faults", data=json.dumps(faults)) as r:
        assert r.status == 200, await r.text()
    ex = ccxt_client(sim)
    await ex.load_markets()
    await ex.create_order(SYM, "market", "buy", qty, params={"newClientOrderId": "reorder-1"})
    return sim, ex, http, ws


async def _close(ex: ccxt.pro.binanceusdm, http: aiohttp.ClientSession, ws: Any) -> None:
    await ws.close()
    await ex.close()
    await http.close()


SPLIT = ["NEW", "TRADE 40/40", "ACCOUNT", "TRADE 40/80", "ACCOUNT", "TRADE 20/100", "ACCOUNT"]


async def test_without_a_fault_a_split_fill_arrives_in_execution_order(start_sim: Callable[..., Any]) -> None:
    _sim, ex, http, ws = await _trade_with_faults(start_sim, [], 100, 40)
    assert [t for t, _ in await _events(ws, 7)] == SPLIT
    await _close(ex, http, ws)


async def test_swap_events_delivers_a_fill_after_the_account_update_it_caused(
    start_sim: Callable[..., Any],
) -> None:
    fault = {"kind": "swap_events", "event": "ORDER_TRADE_UPDATE", "execution_type": "TRADE"}
    sim, ex, http, ws = await _trade_with_faults(start_sim, [fault], 100, 40)
    got = [t for t, _ in await _events(ws, 7)]
    assert got == ["NEW", "ACCOUNT", "TRADE 40/40", "TRADE 40/80", "ACCOUNT", "TRADE 20/100", "ACCOUNT"]
    log = sim.faults.log[0]
    assert (log.hits, log.withheld) == (1, ["OrderTradeUpdate:TRADE"])
    await _close(ex, http, ws)


async def test_late_events_delivers_an_execution_after_a_later_one(start_sim: Callable[..., Any]) -> None:
    """Held for two later events: the second execution (cumulative 80) is seen before the first
    (cumulative 40), out of order within ORDER_TRADE_UPDATE."""
    fault = {"kind": "late_events", "event": "ORDER_TRADE_UPDATE", "execution_type": "TRADE", "after": 2}
    _sim, ex, http, ws = await _trade_with_faults(start_sim, [fault], 100, 40)
    got = [t for t, _ in await _events(ws, 7)]
    assert got == ["NEW", "ACCOUNT", "TRADE 40/80", "TRADE 40/40", "ACCOUNT", "TRADE 20/100", "ACCOUNT"]
    assert sorted(got) == sorted(SPLIT)  # late, not lost nor doubled
    await _close(ex, http, ws)


async def test_late_events_with_no_later_event_is_released_by_its_timer(
    start_sim: Callable[..., Any],
) -> None:
    """Held for ``after`` 5 events that never come: delivered ``ms`` later, and only then counted
    in ``user_events`` (a driver waiting on that count waits for the late event)."""
    fault = {"kind": "late_events", "event": "ACCOUNT_UPDATE", "after": 5, "ms": 300}
    sim, ex, http, ws = await _trade_with_faults(start_sim, [fault], 100, 0)
    (first, _), (second, t_fill) = await _events(ws, 2)
    assert (first, second) == ("NEW", "TRADE 100/100")
    assert sim.private_hub.pushed == 2  # the account update is held, not yet counted
    (third, t_account) = (await _events(ws, 1))[0]
    assert third == "ACCOUNT" and t_account - t_fill >= 0.2
    assert sim.private_hub.pushed == 3
    await _close(ex, http, ws)


async def test_late_events_matches_its_symbol_only(start_sim: Callable[..., Any]) -> None:
    fault = {"kind": "late_events", "symbol": "TRXUSDT", "after": 1}
    sim, ex, http, ws = await _trade_with_faults(start_sim, [fault], 100, 0)
    got = [t for t, _ in await _events(ws, 3)]
    assert got == ["NEW", "TRADE 100/100", "ACCOUNT"]  # an XRP trade: untouched
    assert sim.faults.log[0].hits == 0
    await _close(ex, http, ws)


@pytest.mark.parametrize(
    ("item", "culprit"),
    [
        ({"kind": "late_events", "event": "TRADE"}, "'event' must be one of"),
        ({"kind": "late_events", "after": 0}, "'after' must be an integer in 1..100"),
        ({"kind": "late_events", "ms": -1}, "'ms' must be a number in (0, 60000]"),
        ({"kind": "swap_events", "after": 3}, "swap_events always delivers after the next event"),
        ({"kind": "swap_events", "execution_type": 7}, "'execution_type' must be a string"),
    ],
)
def test_bad_reorder_faults_name_the_culprit(item: dict[str, Any], culprit: str) -> None:
    with pytest.raises(ValueError, match="body\\[0\\]: ") as err:
        parse_faults([item], 0, "body")
    assert culprit in str(err.value)
