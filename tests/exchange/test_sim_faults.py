"""The hostile simulator, seen from the port: the REST answer, then the events, then REST reads.

Each test scripts one of Binance's bad days (issue 7 §1) and checks what a client observes; the
last ones show determinism by seed and the per-type ordering guarantee under random schedules.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perpbot.domain.events import AccountUpdate, AlgoUpdate, ExchangeEvent, OrderTradeUpdate
from perpbot.domain.types import AlgoStatus, OrderSide, OrderStatus, OrderType, SymbolFilters
from perpbot.engine.clock import SimClock
from perpbot.exchange.errors import NO_SUCH_ORDER, SERVER_BUSY, ExchangeError, ExchangeUnavailable
from perpbot.exchange.port import ExchangePort
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.faults import (
    CallFault,
    Delivery,
    EventFate,
    EventRule,
    FaultPlan,
    OrderScript,
    event_kind,
)
from perpbot.exchange.sim.settings import ADL_CLIENT_ID, SimSettings

SYM = "XRPUSDT"
BAR = 15 * 60_000
T0 = 1_704_067_200_000
FILT = SymbolFilters(SYM, tick_size=0.01, step_size=0.001, min_qty=0.001, min_notional=5.0)
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def engine(n: int = 12) -> MatchingEngine:
    bars = [(100.0, 100.0, 100.0, 100.0)] * 4 + [(100.0, 100.5, 97.0, 99.0)] + [(99.0,) * 4] * (n - 5)
    a = np.asarray(bars, dtype=np.float64)
    e = MatchingEngine(SimSettings(slippage_bps=0.0), {SYM: FILT})
    e.add_bars(SYM, T0 + np.arange(len(a), dtype=np.int64) * BAR, a[:, 0], a[:, 1], a[:, 2], a[:, 3])
    return e


@dataclass
class Client:
    """A port client that logs every event it receives, and whether it came inside a REST call."""

    ex: SimExchange
    clock: SimClock
    seen: list[ExchangeEvent] = field(default_factory=list)
    in_call: list[bool] = field(default_factory=list)
    calling: bool = False

    async def on_event(self, ev: ExchangeEvent) -> None:
        self.seen.append(ev)
        self.in_call.append(self.calling)

    async def call(self, coro):  # type: ignore[no-untyped-def]
        self.calling = True
        try:
            return await coro
        finally:
            self.calling = False

    def orders(self) -> list[OrderTradeUpdate]:
        return [e for e in self.seen if isinstance(e, OrderTradeUpdate)]

    async def wait(self, seconds: float) -> None:
        """Let clock time pass, then touch the exchange (as a bot's next REST call would)."""
        await self.clock.sleep(seconds)
        await self.ex.drain()


async def hostile(plan: FaultPlan, n: int = 12) -> Client:
    clock = SimClock(T0)
    ex = SimExchange(engine(n), faults=plan, clock=clock)
    c = Client(ex, clock)
    ex.subscribe(c.on_event)
    await ex.start()
    clock.set(T0 + BAR)
    ex.process_bar(SYM, 0)
    await ex.drain()
    return c


def test_sim_exchange_implements_the_recovery_port() -> None:
    assert isinstance(SimExchange(engine(), faults=FaultPlan()), ExchangePort)


async def test_market_order_acknowledged_then_filled_later_on_the_clock() -> None:
    c = await hostile(FaultPlan(orders={"e1": OrderScript(ack=True, fill_delay_s=12)}))
    ex = c.ex
    r = await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    assert (r.status, r.executed_qty, r.avg_price) == (OrderStatus.NEW, 0.0, 0.0)
    await ex.drain()
    assert [(e.execution_type, e.status) for e in c.orders()] == [("NEW", OrderStatus.NEW)]
    assert await ex.position(SYM) is None
    q = await ex.get_order(SYM, client_order_id="e1")
    assert (q.order_id, q.status, q.executed_qty) == (r.order_id, OrderStatus.NEW, 0.0)
    assert [o.order_id for o in await ex.open_orders(SYM)] == [r.order_id]

    await c.wait(11.9)  # not yet
    assert await ex.position(SYM) is None
    await c.wait(0.1)
    fill = c.orders()[-1]
    assert (fill.execution_type, fill.status, fill.last_filled_qty, fill.cumulative_filled_qty) == (
        "TRADE",
        OrderStatus.FILLED,
        2.0,
        2.0,
    )
    assert fill.trade_time_ms == T0 + BAR + 12_000  # stamped when it happened, not at the candle
    pos = await ex.position(SYM)
    assert pos is not None and pos.quantity == 2.0
    q = await ex.get_order(SYM, client_order_id="e1")
    assert (q.status, q.executed_qty, q.avg_price) == (OrderStatus.FILLED, 2.0, 100.0)
    assert [(t.order_id, t.quantity, t.time_ms) for t in await ex.user_trades(SYM)] == [
        (r.order_id, 2.0, T0 + BAR + 12_000)
    ]
    assert await ex.open_orders(SYM) == []
    await ex.aclose()


async def test_partial_fills_over_several_executions_carry_last_and_cumulative_quantities() -> None:
    script = OrderScript(executions=(0.25, 0.25, 0.5), execution_gap_s=2)
    c = await hostile(FaultPlan(orders={"e1": script}))
    ex = c.ex
    r = await ex.market_order(SYM, BUY, 4.0, client_order_id="e1")
    # The first execution happens inside the call; the answer shows it.
    assert (r.status, r.executed_qty) == (OrderStatus.PARTIALLY_FILLED, 1.0)
    await c.wait(2)
    await c.wait(2)
    trades = [e for e in c.orders() if e.execution_type == "TRADE"]
    assert [(e.status, e.last_filled_qty, e.cumulative_filled_qty) for e in trades] == [
        (OrderStatus.PARTIALLY_FILLED, 1.0, 1.0),
        (OrderStatus.PARTIALLY_FILLED, 1.0, 2.0),
        (OrderStatus.FILLED, 2.0, 4.0),
    ]
    assert len({e.trade_id for e in trades}) == 3 and len({e.order_id for e in trades}) == 1
    assert [e.trade_time_ms - trades[0].trade_time_ms for e in trades] == [0, 2000, 4000]
    assert (await ex.get_order(SYM, order_id=r.order_id)).status is OrderStatus.FILLED
    await ex.aclose()


@pytest.mark.parametrize(("executions", "expect_qty"), [((), 0.0), ((0.4,), 1.2)])
async def test_market_order_expired_with_nothing_or_part_executed(
    executions: tuple[float, ...], expect_qty: float
) -> None:
    c = await hostile(FaultPlan(orders={"e1": OrderScript(executions=executions, expire=True)}))
    ex = c.ex
    r = await ex.market_order(SYM, BUY, 3.0, client_order_id="e1")
    assert (r.status, r.executed_qty) == (OrderStatus.EXPIRED, expect_qty)
    await ex.drain()
    last = c.orders()[-1]
    assert (last.execution_type, last.status, last.cumulative_filled_qty) == (
        "EXPIRED",
        OrderStatus.EXPIRED,
        expect_qty,
    )
    pos = await ex.position(SYM)
    assert (pos.quantity if pos else 0.0) == expect_qty
    assert (await ex.get_order(SYM, client_order_id="e1")).status is OrderStatus.EXPIRED
    await ex.aclose()


async def test_events_delivered_during_the_rest_call_or_after_it() -> None:
    during = await hostile(FaultPlan(p_during=1.0))
    await during.call(during.ex.market_order(SYM, BUY, 1.0, client_order_id="e1"))
    assert len(during.seen) == 3 and all(during.in_call)  # NEW, TRADE, ACCOUNT_UPDATE before the answer

    after = await hostile(FaultPlan())
    await after.call(after.ex.market_order(SYM, BUY, 1.0, client_order_id="e1"))
    assert after.seen == []  # nothing before the answer
    await after.ex.drain()
    assert len(after.seen) == 3 and not any(after.in_call)
    assert [type(e) for e in during.seen] == [type(e) for e in after.seen]
    await during.ex.aclose()
    await after.ex.aclose()


async def test_late_events_wait_for_clock_time_and_hold_back_their_type_only() -> None:
    late = EventRule(EventFate(Delivery.LATE, 30.0), kind="ORDER_TRADE_UPDATE", client_id="e1")
    c = await hostile(FaultPlan(events=(late,)))
    ex = c.ex
    await ex.market_order(SYM, BUY, 1.0, client_order_id="e1")
    await ex.market_order(SYM, BUY, 1.0, client_order_id="e2")  # on time, but behind e1's reports
    await ex.drain()
    assert all(isinstance(e, AccountUpdate) for e in c.seen) and len(c.seen) == 2
    assert ex.hostile is not None and ex.hostile.held_count == 4
    await c.wait(29.9)
    assert len(c.seen) == 2
    await c.wait(0.1)
    reports = [(e.client_order_id, e.execution_type) for e in c.orders()]
    assert reports == [("e1", "NEW"), ("e1", "TRADE"), ("e2", "NEW"), ("e2", "TRADE")]
    await ex.aclose()


async def test_dropped_events_never_arrive_and_rest_shows_what_happened() -> None:
    drop = EventRule(EventFate(Delivery.DROP), client_id="c1")
    c = await hostile(FaultPlan(events=(drop,)))
    ex = c.ex
    await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    await ex.market_order(SYM, SELL, 2.0, reduce_only=True, client_order_id="c1")
    await c.wait(3600)
    assert [e.client_order_id for e in c.orders()] == ["e1", "e1"]
    assert ex.hostile is not None and [type(e) for e in ex.hostile.dropped] == [OrderTradeUpdate] * 2
    assert await ex.position(SYM) is None
    close = await ex.get_order(SYM, client_order_id="c1")
    assert (close.status, close.executed_qty) == (OrderStatus.FILLED, 2.0)
    assert [t.order_id for t in await ex.user_trades(SYM)][-1] == close.order_id
    await ex.aclose()


async def test_whole_order_dead_stream_by_script() -> None:
    c = await hostile(FaultPlan(orders={"c1": OrderScript(events=EventFate(Delivery.DROP))}))
    await c.ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    await c.ex.drain()
    n = len(c.seen)
    await c.ex.market_order(SYM, SELL, 2.0, reduce_only=True, client_order_id="c1")
    await c.wait(60)
    assert len(c.seen) == n  # neither the reports nor the ACCOUNT_UPDATE arrived
    assert await c.ex.position(SYM) is None
    await c.ex.aclose()


async def test_cancel_fails_with_a_binance_code_and_the_order_stays_open() -> None:
    c = await hostile(FaultPlan(calls={("cancel_conditional", 0): CallFault(fail_code=SERVER_BUSY)}))
    ex = c.ex
    await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    sl = await ex.place_conditional(SYM, OrderType.STOP_MARKET, SELL, 2.0, 95.0, client_algo_id="sl1")
    with pytest.raises(ExchangeError) as err:
        await ex.cancel_conditional(SYM, sl.algo_id)
    assert err.value.code == SERVER_BUSY
    assert [a.algo_id for a in await ex.open_conditional_orders(SYM)] == [sl.algo_id]
    await ex.cancel_conditional(SYM, sl.algo_id)  # the retry goes through
    assert await ex.open_conditional_orders(SYM) == []
    assert (await ex.get_conditional(SYM, client_algo_id="sl1")).status is AlgoStatus.CANCELED
    await ex.aclose()


async def test_income_rows_visible_only_after_their_delay() -> None:
    c = await hostile(FaultPlan(income_delay_s=(5.0, 5.0)))
    ex = c.ex
    await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    assert await ex.income_history(SYM, T0) == []
    await c.wait(4.9)
    assert await ex.income_history(SYM, T0) == []
    await c.wait(0.1)
    rows = await ex.income_history(SYM, T0)
    assert [r.income_type for r in rows] == ["COMMISSION"]
    await ex.aclose()


async def test_adl_deleverages_part_of_the_position_and_the_rest_stays_open() -> None:
    c = await hostile(FaultPlan(adl={(SYM, 2): 0.5}))
    ex = c.ex
    await ex.market_order(SYM, BUY, 3.0, client_order_id="e1")
    c.clock.set(T0 + 2 * BAR)
    ex.process_bar(SYM, 1)
    c.clock.set(T0 + 3 * BAR)
    ex.process_bar(SYM, 2)
    await ex.drain()
    adl = c.orders()[-1]
    assert (adl.client_order_id, adl.execution_type, adl.order_type) == (
        ADL_CLIENT_ID,
        "CALCULATED",
        OrderType.LIQUIDATION,
    )
    assert (adl.status, adl.last_filled_qty, adl.cumulative_filled_qty, adl.reduce_only) == (
        OrderStatus.FILLED,
        1.5,
        1.5,
        True,
    )
    assert adl.commission == 0.0 and adl.side is SELL
    assert isinstance(c.seen[-1], AccountUpdate) and c.seen[-1].positions[0].position_amount == 1.5
    pos = await ex.position(SYM)
    assert pos is not None and pos.quantity == 1.5
    assert (await ex.get_order(SYM, client_order_id=ADL_CLIENT_ID)).executed_qty == 1.5
    await ex.aclose()


async def test_direct_deleverage_of_the_whole_position_closes_it() -> None:
    c = await hostile(FaultPlan())
    await c.ex.market_order(SYM, BUY, 3.0, client_order_id="e1")
    c.ex.deleverage(SYM, 10.0, price=101.0)
    await c.ex.drain()
    assert c.orders()[-1].realized_pnl == pytest.approx(3.0)
    assert await c.ex.position(SYM) is None
    await c.ex.aclose()


async def test_market_order_times_out_after_the_exchange_executed_it() -> None:
    c = await hostile(FaultPlan(orders={"e1": OrderScript(timeout=True)}))
    ex = c.ex
    with pytest.raises(ExchangeUnavailable):
        await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    await ex.drain()
    assert [e.status for e in c.orders()] == [OrderStatus.NEW, OrderStatus.FILLED]
    pos = await ex.position(SYM)
    assert pos is not None and pos.quantity == 2.0
    assert (await ex.get_order(SYM, client_order_id="e1")).status is OrderStatus.FILLED
    await ex.aclose()


async def test_conditional_placement_times_out_after_it_was_placed() -> None:
    c = await hostile(FaultPlan(conditionals={"sl1": CallFault(timeout=True)}))
    ex = c.ex
    await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    with pytest.raises(ExchangeUnavailable):
        await ex.place_conditional(SYM, OrderType.STOP_MARKET, SELL, 2.0, 95.0, client_algo_id="sl1")
    algo = await ex.get_conditional(SYM, client_algo_id="sl1")
    assert algo.status is AlgoStatus.NEW
    assert [a.client_algo_id for a in await ex.open_conditional_orders(SYM)] == ["sl1"]
    await ex.aclose()


async def test_scripted_read_failure_and_unknown_order_query() -> None:
    c = await hostile(FaultPlan(calls={("position", 0): CallFault(timeout=True)}))
    with pytest.raises(ExchangeUnavailable):
        await c.ex.position(SYM)
    assert await c.ex.position(SYM) is None  # the second read works
    with pytest.raises(ExchangeError) as err:
        await c.ex.get_order(SYM, client_order_id="nope")
    assert err.value.code == NO_SUCH_ORDER
    await c.ex.aclose()


async def test_triggered_algo_order_is_queryable_with_the_order_it_created() -> None:
    c = await hostile(FaultPlan())
    ex = c.ex
    await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    await ex.place_conditional(SYM, OrderType.STOP_MARKET, SELL, 2.0, 98.0, client_algo_id="sl1")
    for i in range(1, 5):
        c.clock.set(T0 + (i + 1) * BAR)
        ex.process_bar(SYM, i)
    await ex.drain()
    algo = await ex.get_conditional(SYM, client_algo_id="sl1")
    assert algo.status is AlgoStatus.FINISHED and algo.triggered_order_id > 0
    stop_fill = await ex.get_order(SYM, order_id=algo.triggered_order_id)
    assert (stop_fill.status, stop_fill.executed_qty, stop_fill.client_order_id) == (
        OrderStatus.FILLED,
        2.0,
        "sl1",
    )
    await ex.aclose()


# ---------------------------------------------------------------------- random schedules


async def random_session(plan: FaultPlan, ops: list[int]) -> tuple[SimExchange, Client, list[ExchangeEvent]]:
    """Drive a hostile exchange with a list of operation codes; returns every event produced."""
    clock = SimClock(T0)
    eng = engine(40)
    produced: list[ExchangeEvent] = []
    pop = eng.pop_events

    def recording_pop() -> list[ExchangeEvent]:
        out = pop()
        produced.extend(out)
        return out

    eng.pop_events = recording_pop  # type: ignore[method-assign]
    ex = SimExchange(eng, faults=plan, clock=clock)
    c = Client(ex, clock)
    ex.subscribe(c.on_event)
    await ex.start()
    bar = 0
    clock.set(T0 + BAR)
    ex.process_bar(SYM, 0)
    for k, op in enumerate(ops):
        try:
            if op == 0:
                await ex.market_order(SYM, BUY, 1.0 + k % 3, client_order_id=f"o{k}")
            elif op == 1:
                await ex.market_order(SYM, SELL, 5.0, reduce_only=True, client_order_id=f"o{k}")
            elif op == 2:
                await ex.place_conditional(
                    SYM, OrderType.STOP_MARKET, SELL, 1.0, 90.0, client_algo_id=f"a{k}"
                )
            elif op == 3:
                await ex.cancel_all_conditional(SYM)
            elif op == 4:
                await c.wait(7)
            elif op == 5 and bar + 1 < 40:
                bar += 1
                clock.set(max(clock.now_ms(), T0 + (bar + 1) * BAR))
                ex.process_bar(SYM, bar)
            elif op == 6:
                await ex.position(SYM)
                await ex.income_history(SYM, T0)
        except ExchangeError:
            pass
        await asyncio.sleep(0)
    await c.wait(3600)  # every deferred execution is due by now ...
    await c.wait(3600)  # ... and every late event, including those of these executions
    await ex.aclose()
    return ex, c, produced


RANDOM_PLAN = FaultPlan(
    p_ack=0.3,
    p_split=0.3,
    p_expire=0.1,
    p_timeout=0.2,
    p_lost=0.1,
    p_read_fail=0.1,
    p_cancel_fail=0.3,
    p_during=0.3,
    p_late=0.3,
    p_drop=0.1,
    p_adl_per_bar=0.1,
    income_delay_s=(0.0, 10.0),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), ops=st.lists(st.integers(0, 6), min_size=5, max_size=40))
def test_per_type_order_holds_and_nothing_but_dropped_events_is_lost(seed: int, ops: list[int]) -> None:
    plan = replace(RANDOM_PLAN, seed=seed)
    ex, c, produced = asyncio.run(random_session(plan, ops))
    assert ex.hostile is not None
    dropped_ids = {id(e) for e in ex.hostile.dropped}
    assert ex.hostile.held_count == 0 and ex.hostile.pending_actions == 0
    for kind in ("ORDER_TRADE_UPDATE", "ALGO_UPDATE", "ACCOUNT_UPDATE"):
        want = [e for e in produced if event_kind(e) == kind and id(e) not in dropped_ids]
        got = [e for e in c.seen if event_kind(e) == kind]
        assert [id(e) for e in got] == [id(e) for e in want]  # same events, same order, per type
    # Every order report's cumulative quantity never decreases within an order.
    cum: dict[int, float] = {}
    for e in c.orders():
        assert e.cumulative_filled_qty >= cum.get(e.order_id, 0.0)
        cum[e.order_id] = e.cumulative_filled_qty


async def test_same_seed_same_schedule_different_seed_different_schedule() -> None:
    ops = [0, 2, 4, 1, 5, 0, 3, 4, 6, 0, 1, 5, 5, 0, 2, 4, 1, 6] * 3

    def trace(c: Client) -> list[tuple[object, ...]]:
        return [
            (type(e).__name__, getattr(e, "execution_type", ""), getattr(e, "status", None), e.event_time_ms)
            for e in c.seen
        ]

    a = await random_session(replace(RANDOM_PLAN, seed=7), ops)
    b = await random_session(replace(RANDOM_PLAN, seed=7), ops)
    other = await random_session(replace(RANDOM_PLAN, seed=8), ops)
    assert a[0].hostile is not None and b[0].hostile is not None
    fired = a[0].hostile.stats
    assert {"ack", "split", "late", "dropped", "during", "timeout", "fail", "income_delayed"} <= set(fired)
    assert fired == b[0].hostile.stats
    assert trace(a[1]) == trace(b[1])
    assert a[0].engine.fills() == b[0].engine.fills() and a[0].engine.balance() == b[0].engine.balance()
    assert trace(a[1]) != trace(other[1])


async def test_a_plan_with_nothing_enabled_behaves_like_the_plain_simulator() -> None:
    ops = [0, 2, 5, 5, 1, 0, 2, 5, 5, 5, 3, 1] * 2
    hostile_run = await random_session(FaultPlan(), ops)
    clock = SimClock(T0)
    plain = SimExchange(engine(40))
    c = Client(plain, clock)
    plain.subscribe(c.on_event)
    await plain.start()
    # Same script on the plain adapter.
    bar = 0
    plain.process_bar(SYM, 0)
    for k, op in enumerate(ops):
        try:
            if op == 0:
                await plain.market_order(SYM, BUY, 1.0 + k % 3, client_order_id=f"o{k}")
            elif op == 1:
                await plain.market_order(SYM, SELL, 5.0, reduce_only=True, client_order_id=f"o{k}")
            elif op == 2:
                await plain.place_conditional(
                    SYM, OrderType.STOP_MARKET, SELL, 1.0, 90.0, client_algo_id=f"a{k}"
                )
            elif op == 3:
                await plain.cancel_all_conditional(SYM)
            elif op == 5:
                bar += 1
                plain.process_bar(SYM, bar)
        except ExchangeError:
            pass
        await asyncio.sleep(0)
    await plain.drain()
    await plain.aclose()
    assert hostile_run[1].seen == c.seen
    assert any(isinstance(e, AlgoUpdate) for e in c.seen)


async def test_an_acknowledged_order_can_be_cancelled_before_it_fills() -> None:
    c = await hostile(FaultPlan(orders={"e1": OrderScript(ack=True, fill_delay_s=5)}))
    ex = c.ex
    r = await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    await ex.cancel_all_orders(SYM)
    await c.wait(10)
    assert [(e.execution_type, e.status) for e in c.orders()] == [
        ("NEW", OrderStatus.NEW),
        ("CANCELED", OrderStatus.CANCELED),
    ]
    assert await ex.position(SYM) is None
    assert (await ex.get_order(SYM, order_id=r.order_id)).status is OrderStatus.CANCELED
    with pytest.raises(ExchangeError):
        await ex.cancel_order(SYM, r.order_id)  # -2011: no longer open
    await ex.aclose()


async def test_a_lost_request_does_nothing_and_raises_like_a_timeout() -> None:
    c = await hostile(FaultPlan(calls={("market_order", 0): CallFault(lost=True)}))
    ex = c.ex
    with pytest.raises(ExchangeUnavailable):
        await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    await ex.drain()
    assert c.orders() == [] and await ex.position(SYM) is None
    with pytest.raises(ExchangeError) as err:
        await ex.get_order(SYM, client_order_id="e1")
    assert err.value.code == NO_SUCH_ORDER  # the client may resend under the same id
    await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")
    assert (await ex.get_order(SYM, client_order_id="e1")).status is OrderStatus.FILLED
    await ex.aclose()


async def test_adl_also_happens_when_the_backtester_drives_the_engine_directly() -> None:
    c = await hostile(FaultPlan(adl={(SYM, 1): 0.5}))
    ex = c.ex
    await ex.market_order(SYM, BUY, 3.0, client_order_id="e1")
    c.clock.set(T0 + 2 * BAR)
    ex.engine.process_bar(SYM, 1)  # what the runner does, then it drains
    await ex.drain()
    assert c.orders()[-1].client_order_id == ADL_CLIENT_ID
    pos = await ex.position(SYM)
    assert pos is not None and pos.quantity == 1.5
    await ex.aclose()


async def test_a_dead_stream_window_loses_every_event_produced_in_it() -> None:
    start = T0 + BAR + 10_000
    c = await hostile(FaultPlan(dead_stream=((start, start + 60_000),)))
    ex = c.ex
    await ex.market_order(SYM, BUY, 2.0, client_order_id="e1")  # before the window
    await c.wait(10)
    await ex.market_order(SYM, SELL, 2.0, reduce_only=True, client_order_id="c1")  # inside it
    await c.wait(60)
    await ex.market_order(SYM, BUY, 1.0, client_order_id="e2")  # the stream is back
    await ex.drain()
    assert [e.client_order_id for e in c.orders()] == ["e1", "e1", "e2", "e2"]
    assert (await ex.get_order(SYM, client_order_id="c1")).status is OrderStatus.FILLED
    pos = await ex.position(SYM)
    assert pos is not None and pos.quantity == 1.0
    await ex.aclose()


async def test_during_delivery_cannot_deadlock_a_caller_that_its_handler_waits_for() -> None:
    clock = SimClock(T0 + BAR)
    ex = SimExchange(engine(), faults=FaultPlan(p_during=1.0), clock=clock)
    released = asyncio.Event()
    handled: list[str] = []

    async def handler(ev: ExchangeEvent) -> None:
        await released.wait()  # e.g. a lock the caller holds until its REST call returns
        handled.append(type(ev).__name__)

    ex.subscribe(handler)
    await ex.start()
    ex.process_bar(SYM, 0)
    r = await ex.market_order(SYM, BUY, 1.0, client_order_id="e1")  # returns despite the handler
    assert r.status is OrderStatus.FILLED and handled == []
    released.set()
    await ex.drain()
    assert handled == ["OrderTradeUpdate", "OrderTradeUpdate", "AccountUpdate"]
    await ex.aclose()
