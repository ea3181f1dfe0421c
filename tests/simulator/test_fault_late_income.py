"""The ``late_income`` fault: the income history lags the ledger, as Binance's does.

A funding row held back is missing from ``GET /fapi/v1/income`` (what ccxt's
``fetch_funding_history`` reads) until its delay of replay time has passed; the wallet is not
late; a row booked before the fault was injected is never its; a read that missed a row is the
fault's hit, and ``/sim/state`` names the row.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import ccxt.pro
import pytest

from perpbot.simulator.server import SimServer

SYM = "XRP/USDT:USDT"
EIGHT_H = 8 * 3_600_000
BAR = 15 * 60_000


async def _inject(http: aiohttp.ClientSession, *faults: dict[str, Any]) -> None:
    async with http.post("/sim/faults", data=json.dumps(list(faults))) as r:
        assert r.status == 200, await r.text()


async def _fault_log(http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    async with http.get("/sim/state") as r:
        return [f for f in (await r.json())["faults"] if f["kind"] == "late_income"]


def _settlements(sim: SimServer, first_open: int) -> list[int]:
    return [t for t in range(first_open, sim.replay.next_open_ms, BAR) if t % EIGHT_H == 0]


async def _paid(ex: ccxt.pro.binanceusdm) -> list[int]:
    return [p["timestamp"] for p in await ex.fetch_funding_history(SYM)]


async def test_a_funding_row_shows_only_after_its_delay_and_the_wallet_is_on_time(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: aiohttp.ClientSession
) -> None:
    await ex.load_markets()
    await ex.create_order(SYM, "market", "buy", 100)
    await _inject(http, {"kind": "late_income", "ms": 2 * 3_600_000})  # FUNDING_FEE by default
    first_open = sim.replay.next_open_ms
    while not _settlements(sim, first_open):  # up to the first settlement's candle
        sim.replay.advance(1)
    (settled,) = _settlements(sim, first_open)
    wallet = float((await ex.fetch_balance())["info"]["totalWalletBalance"])
    booked = sim.venue.incomes(None, None, None, ())  # the ledger itself: every row
    assert any(r.income_type == "FUNDING_FEE" for r in booked)
    assert wallet == pytest.approx(1000.0 + sum(r.income for r in booked))
    assert await _paid(ex) == []  # booked (the wallet has it), not in the history yet
    [fault] = await _fault_log(http)
    assert fault["hits"] == 1 and fault["withheld"] == [f"XRPUSDT:FUNDING_FEE:{settled}"]
    while sim.venue.now_ms < settled + 2 * 3_600_000:
        sim.replay.advance(1)
    assert await _paid(ex) == [settled]
    assert (await _fault_log(http))[0]["hits"] == 1  # a read after the delay is no hit


async def test_only_rows_booked_after_the_injection_and_only_count_of_them_are_held(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: aiohttp.ClientSession
) -> None:
    await ex.load_markets()
    await ex.create_order(SYM, "market", "buy", 100)
    first_open = sim.replay.next_open_ms
    while not _settlements(sim, first_open):
        sim.replay.advance(1)
    (before,) = _settlements(sim, first_open)
    # Injected after the first settlement was booked (nobody read the history since): not its.
    await _inject(http, {"kind": "late_income", "ms": 3 * EIGHT_H, "count": 1, "symbol": "XRPUSDT"})
    sim.replay.advance(2 * EIGHT_H // BAR)  # two more settlements
    later = _settlements(sim, first_open)[1:]
    assert len(later) == 2
    assert await _paid(ex) == [before, later[1]]  # the first row after the injection is held, once
    [fault] = await _fault_log(http)
    assert fault["remaining"] == 0 and fault["withheld"] == [f"XRPUSDT:FUNDING_FEE:{later[0]}"]


async def test_a_held_row_outside_the_read_window_is_no_hit(
    sim: SimServer, ex: ccxt.pro.binanceusdm, http: aiohttp.ClientSession
) -> None:
    await ex.load_markets()
    await _inject(http, {"kind": "late_income", "income_type": "any", "ms": EIGHT_H})
    await ex.create_order(SYM, "market", "buy", 100)  # its commission row is claimed
    await ex.fetch_ledger(None, sim.venue.now_ms + BAR)  # a window after that row
    [fault] = await _fault_log(http)
    assert fault["hits"] == 0 and fault["remaining"] == 0  # claimed the commission, never missed


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": "late_income", "income_type": "FUNDING"}, "'income_type' must be one of"),
        ({"kind": "late_income", "ms": 0}, "'ms' must be a number in (0, 604800000]"),
        ({"kind": "late_income", "ms": True}, "'ms' must be a number"),
    ],
)
async def test_a_bad_late_income_fault_is_refused_naming_the_culprit(
    http: aiohttp.ClientSession, fault: dict[str, Any], message: str
) -> None:
    async with http.post("/sim/faults", data=json.dumps([fault])) as r:
        assert r.status == 400
        assert message in await r.text()
