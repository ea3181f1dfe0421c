"""Defects found by the engine safety review (helper ``revengine``), each with the scenario that
showed it on the simulated exchange.

Why a file of its own: the behaviour files it would belong to are already past their size."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from perpbot.config import AppConfig
from perpbot.domain.types import CloseReason, OrderResult, OrderSide, Position
from perpbot.engine.clock import SimClock
from perpbot.engine.kill_switch import KillSwitch
from perpbot.engine.risk import DAY_MS, RiskManager, utc_day
from perpbot.exchange.errors import ExchangeUnavailable
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.faults import CallFault, Delivery, EventFate, EventRule, FaultPlan, OrderScript

from .factories import BAR, SL_BAR, SYM, T0, ctx_at, flat
from .harness import LONG, World
from .test_bot_hostile import ByIntent, covered


async def test_a_signal_while_an_entry_is_pending_sends_no_second_entry() -> None:
    """The entry is acknowledged and still open at the next candle's signal. Old code took the
    pending entry's registration for a stale one: released it, sent a second entry and forgot
    the first, whose late fill then opened a position that nobody tracked or protected (until
    reconcile adopted it and, with no stop prices known, closed it as an emergency)."""
    plan = FaultPlan(orders=ByIntent({"entry": OrderScript(ack=True, fill_delay_s=1500.0)}))
    w = World(flat(100, 6), faults=plan)
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.bot.state.side is None and w.risk.open_positions == {SYM: LONG}  # pending
    await w.bot.reconcile()  # still open: kept pending
    await w.run({2: LONG}, until=2)  # a new signal while it is pending
    assert len(w.journal.orders(SYM, "ENTRY")) == 1  # no second entry
    assert w.risk.open_positions == {SYM: LONG}  # still registered
    await w.run({}, until=4)  # the first entry fills
    await w.bot.wait_background()
    pos = w.engine.position(SYM)
    assert pos is not None and w.bot.state.side is LONG and w.bot.state.qty == pos.quantity
    assert covered(w) and w.risk.open_positions == {SYM: LONG}
    assert not w.journal.orders(SYM, "EMERGENCY")


class SlowAnswers(SimExchange):
    """The simulated exchange with network latency on chosen calls: a position read that reaches
    the exchange late, a market order whose answer comes back late (the exchange executes it at
    once). ``hold[name]`` gates the next call of that name until the event is set."""

    hold: dict[str, asyncio.Event]

    async def position(self, symbol: str) -> Position | None:
        gate = self.hold.pop("position", None)
        if gate is not None:
            await gate.wait()
        return await super().position(symbol)

    async def market_order(self, symbol: str, side: OrderSide, quantity: float, **kw: Any) -> OrderResult:
        res = await super().market_order(symbol, side, quantity, **kw)
        gate = self.hold.pop("market_order", None)
        if gate is not None:
            await gate.wait()
        return res


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_reconciliation_pass_overlapping_a_candles_entry_leaves_the_entry_alone() -> None:
    """The runtime's reconcile timer fires on the candle closes (multiples of 300 s). A pass
    whose position read answers after the candle's entry executed, but before the entry's own
    answer came back, found an untracked position. Old code adopted it (no stop prices known:
    "SL and TP could not be placed", emergency close of a healthy entry, fees lost), and the
    candle's entry then crashed on the pending entry the adoption had taken."""
    w = World(flat(100, 4), exchange_cls=SlowAnswers)
    w.ex.hold = {}
    await w.start()
    await w.run({}, until=0)
    read, answer = asyncio.Event(), asyncio.Event()
    w.ex.hold["position"] = read
    reconciling = asyncio.create_task(w.bot.reconcile())  # its position read is under way
    await _turns(50)
    w.ex.hold["market_order"] = answer
    candle = asyncio.create_task(w.step(LONG))
    await _turns(50)
    read.set()  # the read reaches the exchange (after the entry, if the entry was sent)
    await _turns(500)
    answer.set()
    await asyncio.gather(reconciling, candle)
    await w.bot.wait_background()
    assert w.bot.errors == 0
    assert not w.journal.orders(SYM, "EMERGENCY") and not w.bot.closed_trades
    pos = w.engine.position(SYM)
    assert pos is not None and w.bot.state.side is LONG and w.bot.state.qty == pos.quantity
    assert covered(w) and w.risk.open_positions == {SYM: LONG}


async def test_an_entry_of_unknown_outcome_stays_registered_when_the_follow_up_reads_fail() -> None:
    """The entry is acknowledged (NEW), its events are lost, and both follow-up reads (the order
    query, then the position) fail. Old code let the failed position read escape ``_open``: the
    entry, which fills 30 s later, was pending but absent from the risk registry (the other
    bots' limits ignored it) until reconcile found it."""
    plan = FaultPlan(
        orders=ByIntent({"entry": OrderScript(ack=True, fill_delay_s=30.0, events=EventFate(Delivery.DROP))}),
        # position reads: #0 at start, #1 on the signal, #2 the look after the failed order query
        calls={("get_order", 0): CallFault(timeout=True), ("position", 2): CallFault(timeout=True)},
    )
    w = World(flat(100, 4), faults=plan)
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.bot.errors == 0 and w.risk.open_positions == {SYM: LONG}  # pending, registered
    await w.run({}, until=2)  # it fills
    await w.bot.reconcile()
    await w.bot.wait_background()
    assert w.bot.state.side is LONG and covered(w) and w.risk.open_positions == {SYM: LONG}


class SlowCancel(SimExchange):
    """The simulated exchange whose next ``cancel_conditional`` answers only once ``gate`` is set."""

    gate: asyncio.Event | None = None

    async def cancel_conditional(self, symbol: str, algo_id: int) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            await gate.wait()
        await super().cancel_conditional(symbol, algo_id)


async def test_a_kill_switch_tripped_by_the_close_an_entry_waited_for_stops_that_entry() -> None:
    """The stop fires at the candle's end; while its trade is being booked (the sibling TP's
    cancel under way) the candle's signal comes in. The entry waits for the close to settle
    (``can_enter``); the booked loss trips the kill switch. Old code checked the switch only
    before that wait and sent the entry anyway."""
    w = World([*flat(100, 2), SL_BAR, *flat(97, 2)], exchange_cls=SlowCancel, base=1e6)
    w.bot.kill_switch = KillSwitch(SYM, w.journal, fast_window=1)  # one losing trade trips it
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.bot.state.side is LONG
    gate = asyncio.Event()
    w.ex.gate = gate
    w.i += 1
    w.clock.set(int(w.t[w.i]) + BAR)
    w.ex.process_bar(SYM, w.i)  # the stop fires
    booking = asyncio.create_task(w.ex.drain())
    await _turns(30)  # the trade is being booked: the sibling's cancel is under way
    assert not w.bot.kill_switch.tripped
    candle = asyncio.create_task(w.bot.on_candle(ctx_at(w.i, 97.0, LONG)))
    await _turns(1)  # the entry waits for the close to settle
    gate.set()
    await asyncio.gather(booking, candle)
    await w.ex.drain()
    assert w.bot.kill_switch.tripped
    assert len(w.journal.orders(SYM, "ENTRY")) == 1 and w.engine.position(SYM) is None


async def test_a_loss_filled_after_midnight_counts_today_when_our_clock_is_behind() -> None:
    """A loss fills at 00:00:00.050 on the venue's clock (its trade time, which the journal's
    daily PnL files it under) and is booked while our clock still reads 23:59:59.900. Old code
    added it to the old day's PnL, which our own midnight reset then zeroed: the new day's loss
    limit never saw it (while a restart, reading the journal, would)."""
    midnight = T0 + DAY_MS
    clock = SimClock(midnight - 100)
    risk = RiskManager(AppConfig(symbols=(SYM,)), clock)
    risk.set_base_balance(1000.0)
    await risk.close(SYM, -60.0, time_ms=midnight + 50)
    clock.set(midnight + 1_000)
    assert not await risk.trading_allowed()
    assert risk.daily_pnl == -60.0 and risk.day == utc_day(midnight)


class LateOrder(SimExchange):
    """The first entry's call times out before the exchange has it; the exchange executes it
    later (``execute_late``) or never: meanwhile a query by client id answers -2013."""

    late: tuple[Any, ...] | None = None
    armed = True

    async def market_order(self, symbol: str, side: OrderSide, quantity: float, **kw: Any) -> OrderResult:
        if self.armed and not kw.get("reduce_only"):
            self.armed = False
            self.late = (symbol, side, quantity, kw)
            raise ExchangeUnavailable("-1007: Timeout waiting for response from backend server")
        return await super().market_order(symbol, side, quantity, **kw)

    async def execute_late(self) -> None:
        assert self.late is not None
        symbol, side, quantity, kw = self.late
        await super().market_order(symbol, side, quantity, **kw)


async def test_an_entry_unknown_to_the_exchange_right_after_a_timeout_is_adopted_when_it_executes() -> None:
    """The entry's call times out (Binance -1007: send and execution status unknown) and the
    query by client id answers "does not exist": the exchange has not processed it yet. Old
    code took that for "never": the order executed a moment later and its position had no
    SL/TP and no risk registration until reconcile, which then closed it as an emergency."""
    w = World(flat(100, 4), exchange_cls=LateOrder)
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.bot.state.side is None and w.risk.open_positions == {SYM: LONG}  # pending
    await w.ex.execute_late()
    await w.ex.drain()
    await w.bot.wait_background()
    assert w.bot.state.side is LONG and covered(w) and w.risk.open_positions == {SYM: LONG}
    assert not w.journal.orders(SYM, "EMERGENCY")


async def test_an_entry_that_never_reached_the_exchange_is_released_by_reconcile() -> None:
    w = World(flat(100, 4), exchange_cls=LateOrder)
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.risk.open_positions == {SYM: LONG}
    await w.bot.reconcile()  # still unknown to the exchange: nothing happened
    assert w.risk.open_positions == {} and w.bot.at_rest
    await w.run({2: LONG}, until=2)
    assert w.bot.state.side is LONG and covered(w)


class HookedRead(SimExchange):
    """``before_position`` runs once, right before the next position read reaches the exchange."""

    before_position: Callable[[], None] | None = None

    async def position(self, symbol: str) -> Position | None:
        hook, self.before_position = self.before_position, None
        if hook is not None:
            hook()
        return await super().position(symbol)


async def test_a_pending_entry_filling_during_a_reconcile_pass_is_protected_from_its_own_atr() -> None:
    """An acknowledged entry is still open when reconcile asks for it, and fills before the same
    pass reads the position. Old code adopted the position without a candle (no ATR) and with
    no stop journaled for it: emergency close of a healthy entry, although the pending entry
    carried the ATR its stops are computed from."""
    plan = FaultPlan(orders=ByIntent({"entry": OrderScript(ack=True, fill_delay_s=30.0)}))
    w = World(flat(100, 4), faults=plan, exchange_cls=HookedRead)
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.bot.state.side is None and w.risk.open_positions == {SYM: LONG}  # pending
    now = w.clock.now_ms()
    w.ex.before_position = lambda: w.clock.set(now + 31_000)  # it fills meanwhile
    await w.bot.reconcile()
    await w.ex.drain()
    await w.bot.wait_background()
    assert w.bot.state.side is LONG and covered(w) and not w.journal.orders(SYM, "EMERGENCY")
    assert (w.bot.state.sl_price, w.bot.state.tp_price) == (96.0, 104.0)  # 2 ATR from 100


def _failing_cancels(n: int) -> FaultPlan:
    """The first ``n`` cancels of either kind fail (-1008, the order stays open)."""
    calls = {
        (m, k): CallFault(fail_code=-1008)
        for m in ("cancel_conditional", "cancel_all_conditional")
        for k in range(n)
    }
    return FaultPlan(calls=calls)


# Entry at 100 (SL 96, TP 104); the stop fires; flat at 97; then a rise through 104.
_STALE_TP_BARS = [*flat(100, 2), SL_BAR, *flat(97, 1), (97, 104.5, 97, 104), (104, 104, 104, 104)]


async def test_a_new_entry_waits_while_the_last_positions_take_profit_cannot_be_cancelled() -> None:
    """The stop closes the position; its sibling TP's cancel keeps failing (retries and
    reconcile's cancel-all too). Old code entered again on the next signal with the old TP
    still open: the rise to 104 executed it against the *new* position (closed at the old
    position's take-profit instead of its own SL 87 / TP 107)."""
    w = World(_STALE_TP_BARS, faults=_failing_cancels(8), base=1e6)
    await w.start()
    await w.run({1: LONG}, until=2)  # entry, then the stop fires
    await w.bot.wait_background()
    await w.bot.reconcile()
    assert [o.trigger_price for o in w.algo_orders()] == [104.0]  # the old TP, still open
    await w.step(LONG, atr=5.0)
    await w.run({}, until=5)
    await w.bot.wait_background()
    assert len(w.journal.orders(SYM, "ENTRY")) == 1  # no entry beside it
    assert [t.reason for t in w.bot.closed_trades] == [CloseReason.SL]


async def test_the_entry_first_cancels_the_last_positions_leftover_take_profit() -> None:
    """Same, but the exchange takes cancels again by the next signal: the leftover TP is
    cancelled before the entry, and the new position keeps only its own SL/TP."""
    w = World(_STALE_TP_BARS, faults=_failing_cancels(4), base=1e6)
    await w.start()
    await w.run({1: LONG}, until=2)
    await w.bot.wait_background()
    await w.step(LONG, atr=5.0)
    await w.bot.wait_background()
    assert w.bot.state.side is LONG
    assert sorted(o.trigger_price for o in w.algo_orders()) == [87.0, 107.0]
    await w.run({}, until=5)
    assert w.bot.state.side is LONG and [t.reason for t in w.bot.closed_trades] == [CloseReason.SL]


async def test_a_duplicate_take_profit_nobody_tracks_is_cancelled_before_the_next_entry() -> None:
    """The TP's placement times out after the exchange took it and the look-up by client id
    fails: the bot places a second TP (``tp2``), the first stays open untracked. The stop
    closes the position and only the tracked TP is cancelled. Old code entered again with the
    untracked TP open: the rise to 104 executed it against the new position."""
    plan = FaultPlan(
        conditionals=ByIntent({"tp": CallFault(timeout=True)}),
        calls={("open_conditional_orders", 1): CallFault(lost=True)},  # #0: the flat start
    )
    w = World(_STALE_TP_BARS, faults=plan, base=1e6)
    await w.start()
    await w.run({1: LONG}, until=2)  # entry (two TPs at 104), then the stop fires
    await w.bot.wait_background()
    assert [o.trigger_price for o in w.algo_orders()] == [104.0]  # the untracked one
    await w.step(LONG, atr=5.0)
    await w.run({}, until=5)
    await w.bot.wait_background()
    assert w.bot.state.side is LONG and [t.reason for t in w.bot.closed_trades] == [CloseReason.SL]
    assert sorted(o.trigger_price for o in w.algo_orders()) == [87.0, 107.0]


async def test_stops_go_out_before_the_entry_bookkeeping_read_and_its_back_off() -> None:
    """The entry is answered FILLED, its stream events come a minute late, and ``userTrades``
    fails three times. Old code read the entry's executions (retried with 1 s and 2 s of
    back-off, each attempt up to the request timeout live) before placing SL and TP: the
    position stayed unprotected for that whole time. The read is bookkeeping only."""
    plan = FaultPlan(
        events=(EventRule(EventFate(Delivery.LATE, 60.0), kind="ORDER_TRADE_UPDATE"),),
        calls={("user_trades", k): CallFault(timeout=True) for k in range(3)},
    )
    w = World(flat(100, 3), faults=plan)
    await w.start()
    await w.run({1: LONG}, until=1)
    await w.bot.wait_background()
    (entry,) = w.journal.orders(SYM, "ENTRY")
    stops = w.journal.orders(SYM, "SL") + w.journal.orders(SYM, "TP")
    assert [o.time_ms for o in stops] == [entry.time_ms, entry.time_ms]  # no wait before them
    assert covered(w) and w.bot.state.side is LONG


async def test_a_candle_that_waited_for_a_reconcile_pass_reads_the_position_again() -> None:
    """The runtime hands the candle a position read taken when the candle came in. A reconcile
    pass was under way and emergency-closed a position nobody here had opened (no stop prices
    known). Deciding on the handed-over read afterwards adopted a position that no longer
    existed: a phantom LONG registered with the risk manager, SL/TP placed for nothing, and
    no entry for the signal."""
    w = World(flat(100, 4), exchange_cls=SlowAnswers)
    w.ex.hold = {}
    await w.start()
    await w.run({}, until=0)
    w.engine.market_order(SYM, OrderSide.BUY, 10.0)  # a position nobody here opened
    snapshot = w.engine.position(SYM)
    read = asyncio.Event()
    w.ex.hold["position"] = read
    reconciling = asyncio.create_task(w.bot.reconcile())
    await _turns(20)

    async def handed_over() -> Position | None:
        return snapshot

    w.i += 1
    candle = asyncio.create_task(w.bot.on_candle(ctx_at(w.i, 100.0, LONG), position=handed_over()))
    await _turns(20)
    read.set()
    await asyncio.gather(reconciling, candle)
    await w.bot.wait_background()
    assert [t.reason for t in w.bot.closed_trades] == [CloseReason.EMERGENCY]  # the stranger
    pos = w.engine.position(SYM)
    assert pos is not None and w.bot.state.side is LONG and w.bot.state.qty == pos.quantity
    assert len(w.journal.orders(SYM, "ENTRY")) == 1 and covered(w)
