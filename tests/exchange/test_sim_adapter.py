"""``SimExchange``: the async port over the engine and its in-order event delivery."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from perpbot.domain.events import AlgoUpdate, ExchangeEvent, OrderTradeUpdate
from perpbot.domain.types import AlgoStatus, OrderSide, OrderStatus, OrderType, SymbolFilters
from perpbot.exchange.errors import INVALID_SYMBOL, REDUCE_ONLY_REJECTED, ExchangeError
from perpbot.exchange.port import ExchangePort
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.settings import SimSettings

SYM = "XRPUSDT"
BAR = 15 * 60_000
T0 = 1_704_067_200_000
FILT = SymbolFilters(SYM, tick_size=0.01, step_size=0.001, min_qty=0.001, min_notional=5.0)


def engine(bars: list[tuple[float, float, float, float]] | None = None) -> MatchingEngine:
    bars = bars or [(100.0, 100.0, 100.0, 100.0)] * 4 + [(100.0, 100.5, 97.0, 99.0)] + [(99.0,) * 4] * 3
    a = np.asarray(bars, dtype=np.float64)
    e = MatchingEngine(SimSettings(slippage_bps=0.0), {SYM: FILT})
    e.add_bars(SYM, T0 + np.arange(len(a), dtype=np.int64) * BAR, a[:, 0], a[:, 1], a[:, 2], a[:, 3])
    return e


async def run_script(ex: SimExchange) -> None:
    """Entry, protection, a stop-out and a cancel, driven like the backtester drives it."""
    ex.process_bar(SYM, 0)
    await ex.set_isolated_margin(SYM)
    await ex.set_leverage(SYM, 10)
    await ex.market_order(SYM, OrderSide.BUY, 2.0)
    await ex.place_conditional(SYM, OrderType.STOP_MARKET, OrderSide.SELL, 2.0, 98.0)
    await ex.place_conditional(SYM, OrderType.TAKE_PROFIT_MARKET, OrderSide.SELL, 2.0, 104.0)
    for i in range(1, 6):
        ex.process_bar(SYM, i)
        await ex.drain()
    await ex.cancel_all_conditional(SYM)


def test_sim_exchange_implements_the_port() -> None:
    assert isinstance(SimExchange(engine()), ExchangePort)


async def test_events_are_delivered_in_engine_order_and_drain_waits() -> None:
    ex = SimExchange(engine())
    seen: list[ExchangeEvent] = []

    async def slow_handler(ev: ExchangeEvent) -> None:
        for _ in range(3):  # yields to the loop: delivery must still be strictly sequential
            await asyncio.sleep(0)
        seen.append(ev)

    ex.subscribe(slow_handler)
    await ex.start()
    await run_script(ex)
    await ex.drain()
    # Reference: the order in which the engine itself produced the events of the same script.
    ref_engine = engine()
    produced: list[ExchangeEvent] = []
    pop = ref_engine.pop_events

    def recording_pop() -> list[ExchangeEvent]:
        out = pop()
        produced.extend(out)
        return out

    ref_engine.pop_events = recording_pop  # type: ignore[method-assign]
    ref = SimExchange(ref_engine)
    await run_script(ref)
    await ref.drain()
    await ref.aclose()
    assert seen == produced
    assert len(seen) > 10
    assert any(isinstance(e, AlgoUpdate) and e.status is AlgoStatus.TRIGGERED for e in seen)
    assert ex.delivered == len(seen)
    await ex.aclose()


async def test_nothing_is_delivered_before_the_dispatcher_runs_and_drain_returns_after_all() -> None:
    ex = SimExchange(engine())
    seen: list[str] = []

    async def handler(ev: ExchangeEvent) -> None:
        await asyncio.sleep(0.001)
        seen.append(type(ev).__name__)

    ex.subscribe(handler)
    ex.process_bar(SYM, 0)
    await ex.market_order(SYM, OrderSide.BUY, 1.0)  # the sim answers without yielding
    assert seen == []
    await ex.drain()  # starts the dispatcher when needed
    assert seen == ["OrderTradeUpdate", "OrderTradeUpdate", "AccountUpdate"]
    await ex.drain()  # nothing pending: returns at once
    await ex.aclose()


async def test_handler_exception_is_logged_and_delivery_continues(caplog: pytest.LogCaptureFixture) -> None:
    ex = SimExchange(engine())
    seen: list[ExchangeEvent] = []

    async def bad(ev: ExchangeEvent) -> None:
        raise RuntimeError("boom")

    async def good(ev: ExchangeEvent) -> None:
        seen.append(ev)

    ex.subscribe(bad)
    ex.subscribe(good)
    ex.process_bar(SYM, 0)
    with caplog.at_level(logging.ERROR, logger="perpbot.exchange.sim.adapter"):
        await ex.market_order(SYM, OrderSide.BUY, 1.0)
        await ex.market_order(SYM, OrderSide.SELL, 1.0, reduce_only=True)
        await asyncio.wait_for(ex.drain(), timeout=5)
    assert len(seen) == 6
    failures = [r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]
    assert len(failures) == 6
    await ex.aclose()


async def test_handler_calling_the_exchange_does_not_deadlock() -> None:
    ex = SimExchange(engine())
    seen: list[str] = []

    async def handler(ev: ExchangeEvent) -> None:
        if isinstance(ev, OrderTradeUpdate) and ev.status is OrderStatus.FILLED and ev.reduce_only:
            # what the bot does after a close: cancel the leftover sibling by id
            for c in await ex.open_conditional_orders(SYM):
                await ex.cancel_conditional(SYM, c.algo_id)
            seen.append("cancelled-sibling")
        if isinstance(ev, AlgoUpdate):
            seen.append(f"algo:{ev.status.value}")
        if isinstance(ev, OrderTradeUpdate) and ev.execution_type == "NEW":
            # re-entrant drain() would wait for itself: refused, not a deadlock
            with pytest.raises(RuntimeError):
                await ex.drain()

    ex.subscribe(handler)
    await ex.start()
    await asyncio.wait_for(run_script(ex), timeout=5)
    await asyncio.wait_for(ex.drain(), timeout=5)
    # The cancel happened inside the handler; its CANCELED event came after the stop's events.
    assert seen[-4:] == ["algo:TRIGGERED", "cancelled-sibling", "algo:FINISHED", "algo:CANCELED"]
    assert await ex.open_conditional_orders(SYM) == []
    await ex.aclose()


async def test_drain_reports_a_dead_dispatcher_instead_of_hanging() -> None:
    ex = SimExchange(engine())

    class Fatal(BaseException):
        """Not an Exception: the dispatcher does not swallow it, so the task dies."""

    async def fatal(ev: ExchangeEvent) -> None:
        raise Fatal

    ex.subscribe(fatal)
    ex.process_bar(SYM, 0)
    await ex.market_order(SYM, OrderSide.BUY, 1.0)
    with pytest.raises(RuntimeError, match="dispatcher stopped"):
        await asyncio.wait_for(ex.drain(), timeout=5)
    await ex.aclose()


async def test_port_methods_map_to_the_engine() -> None:
    e = engine()
    ex = SimExchange(e)
    ex.process_bar(SYM, 0)
    assert (await ex.symbol_filters(SYM)) == FILT
    assert await ex.balance() == 1000.0
    assert await ex.position(SYM) is None
    await ex.set_isolated_margin(SYM)
    await ex.set_isolated_margin(SYM)  # -4046 swallowed
    assert e.margin_type(SYM) == "ISOLATED"
    with pytest.raises(ExchangeError) as ei:
        await ex.set_isolated_margin("DOGEUSDT")
    assert ei.value.code == INVALID_SYMBOL
    with pytest.raises(ExchangeError) as ei:
        await ex.market_order(SYM, OrderSide.SELL, 1.0, reduce_only=True)
    assert ei.value.code == REDUCE_ONLY_REJECTED
    r = await ex.market_order(SYM, OrderSide.BUY, 1.0, client_order_id="x")
    assert r.status is OrderStatus.FILLED
    pos = await ex.position(SYM)
    assert pos is not None and pos.quantity == 1.0
    c = await ex.place_conditional(SYM, OrderType.STOP_MARKET, OrderSide.SELL, 1.0, 95.0, client_algo_id="sl")
    assert [x.algo_id for x in await ex.open_conditional_orders(SYM)] == [c.algo_id]
    assert await ex.open_orders(SYM) == []
    await ex.cancel_all_orders(SYM)  # leaves the algo order
    assert len(await ex.open_conditional_orders(SYM)) == 1
    await ex.cancel_conditional(SYM, c.algo_id)
    rows = await ex.income_history(SYM, T0, ("COMMISSION",))
    assert len(rows) == 1 and rows[0].income == pytest.approx(-0.05)
    assert await ex.income_history(SYM, T0 + 10 * BAR) == []
    await ex.drain()
    await ex.aclose()
