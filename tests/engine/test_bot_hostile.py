"""Issue 7 §2 on the hostile simulated exchange: the bot stays correct when events arrive late
or never, orders are acknowledged and fill later, expire, fill in part, cancels fail and the
exchange deleverages part of a position.

Each test names the defect it reproduces and says what the code at commit 93537bc did.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from perpbot.domain.client_ids import make_client_id
from perpbot.domain.types import CloseReason, OrderSide, OrderType
from perpbot.engine.journal import Journal
from perpbot.exchange.sim.faults import CallFault, Delivery, EventFate, EventRule, FaultPlan, OrderScript

from .factories import BAR, SL_BAR, SYM, T0, ctx_at, flat
from .harness import EXACT, LONG, SHORT, World

LATE = EventFate(Delivery.LATE, 60.0)
DROP = EventFate(Delivery.DROP)


class ByIntent(Mapping[str, OrderScript]):
    """Order scripts chosen by exact client id, else by the id's intent (the bot's ids are
    ``pb-<symbol>-<minute>-<intent>[<n>]``, ``perpbot.domain.client_ids``)."""

    def __init__(self, scripts: dict[str, OrderScript]) -> None:
        self.scripts = scripts

    def __getitem__(self, key: str) -> OrderScript:
        if key in self.scripts:
            return self.scripts[key]
        intent = key.rsplit("-", 1)[-1].rstrip("0123456789")
        if intent in self.scripts:
            return self.scripts[intent]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.scripts)

    def __len__(self) -> int:
        return len(self.scripts)


def covered(w: World) -> bool:
    """The exchange position has a reduce-only SL and TP, each for its full quantity."""
    pos = w.engine.position(SYM)
    if pos is None:
        return True
    algos = w.algo_orders()
    kinds = {o.type.value for o in algos if o.reduce_only and o.quantity >= pos.quantity - 1e-9}
    return kinds == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}


def exchange_fills_booked(w: World) -> None:
    """Every execution of the simulator is in exactly one journaled trade's accounting."""
    keys = set(w.journal.accounted_keys(SYM))
    for f in w.engine.fills(SYM):
        assert f"t:{f.trade_id}" in keys, f


# ====================================================================== defect 1


async def test_late_stop_fill_after_a_sync_close_and_reentry_touches_nothing() -> None:
    """The stop fires inside the candle and its events arrive a minute late. The candle handler
    finds the account flat, books the close (SYNC) and re-enters; then the old stop's events
    arrive. Old code: the SYNC close did not mark its rows accounted, so the old fill was taken
    as the close of the *new* position (loss booked twice, new TP cancelled as its "sibling",
    new position untracked). Now the SYNC close books the stop's own execution (from REST, by
    trade id) and the late events change nothing."""
    sl_cid = make_client_id(SYM, T0 + 2 * BAR, "sl")  # the first stop: placed at the close of bar 1
    late = (
        EventRule(LATE, kind="ORDER_TRADE_UPDATE", client_id=sl_cid),
        EventRule(LATE, kind="ALGO_UPDATE", client_id=sl_cid, status="TRIGGERED"),
        EventRule(LATE, kind="ALGO_UPDATE", client_id=sl_cid, status="FINISHED"),
    )
    # A base of 10 000 keeps the stop's loss under the daily limit, so the bot may re-enter.
    w = World([*flat(100, 3), SL_BAR, *flat(97, 4)], faults=FaultPlan(events=late), base=10_000.0)
    await w.start()
    await w.run({1: LONG, 3: LONG}, until=3)
    (sl_trade,) = w.bot.closed_trades
    assert sl_trade.reason is CloseReason.SL
    sl_fill = next(f for f in w.engine.fills(SYM) if f.side is OrderSide.SELL)
    assert sl_trade.realized_pnl == pytest.approx(sl_fill.realized_pnl)
    assert w.bot.state.side is LONG  # re-entered
    await w.run({}, until=5)  # the old stop's events arrive now
    await w.bot.wait_background()
    assert w.bot.closed_trades == [sl_trade]
    assert w.risk.daily_pnl == pytest.approx(sl_trade.net_pnl)
    assert w.bot.state.side is LONG and w.risk.open_positions == {SYM: LONG}
    assert covered(w)  # the new TP was not cancelled as a "sibling"
    assert len(w.journal.closed_trades()) == 1


# ====================================================================== defects 2 and 4


def expiring_closes(**kw: object) -> FaultPlan:
    """Every reduce-only close of the bot (client id intents ``close``/``emerg``) expires unfilled."""
    nothing = OrderScript(expire=True)
    return FaultPlan(orders=ByIntent({"close": nothing, "emerg": nothing}), **kw)  # type: ignore[arg-type]


REVERSE_BARS = [*flat(100, 3), (100, 101, 99.5, 101), *flat(101, 4)]


async def test_an_unconfirmed_reverse_keeps_the_position_tracked_and_protected() -> None:
    """Every reverse close expires with nothing executed. Old code took the timed-out close as
    done: released the position with PnL 0, cancelled its SL and TP, left it open and naked.
    Now the close is retried, and when it is still not confirmed the position stays tracked,
    registered and protected, with no re-entry."""
    w = World(REVERSE_BARS, faults=expiring_closes())
    await w.start()
    await w.run({1: LONG, 3: SHORT}, until=3)
    assert w.engine.position(SYM) is not None and w.engine.position(SYM).side is LONG  # type: ignore[union-attr]
    assert w.bot.state.side is LONG and w.risk.open_positions == {SYM: LONG}
    assert covered(w)
    assert w.bot.closed_trades == []
    assert len(w.journal.orders(SYM, "REVERSE")) == 3  # retried
    assert w.journal.events("close_unconfirmed", SYM)


async def test_an_emergency_close_that_fails_reports_manual_action() -> None:
    """The stop cannot be placed and the emergency close expires. Old code reported success
    ("position closed") whenever the close order was accepted. Now it says what happened."""
    plan = expiring_closes(calls={("place_conditional", k): CallFault(fail_code=-1008) for k in range(3)})
    w = World(flat(100, 4), faults=plan)
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.engine.position(SYM) is not None
    texts = w.notifier.texts("emergency")
    assert texts and "Manual action needed" in texts[-1] and "closed" not in texts[-1].split(";")[-1]
    assert w.journal.events("manual_action_needed", SYM)
    assert w.bot.state.side is LONG and w.risk.open_positions == {SYM: LONG}  # still tracked


async def test_each_close_has_its_own_waiter() -> None:
    """Defect 4: the first position's close is confirmed by REST (its events are held); the
    second position's close expires unfilled while the first close's fills arrive. Old code
    woke the second close's (shared) waiter with the first close's fills and cancelled the
    still-open second position's protection. Now the fills are matched to their position."""
    first_close = make_client_id(SYM, T0 + 4 * BAR, "close")
    plan = FaultPlan(
        # The first reverse fills (its events held back 15 min); every later close expires.
        orders=ByIntent({first_close: OrderScript(), "close": OrderScript(expire=True)}),
        events=(EventRule(EventFate(Delivery.LATE, 900.0), client_id=first_close),),
    )
    w = World([*REVERSE_BARS, *flat(101, 4)], faults=plan)
    await w.start()
    await w.run({1: LONG, 3: SHORT}, until=3)
    (first,) = w.bot.closed_trades
    assert first.reason is CloseReason.REVERSE and w.bot.state.side is SHORT
    await w.run({4: LONG}, until=5)  # second reverse expires; first close's fills arrive
    await w.bot.wait_background()
    assert w.bot.closed_trades == [first]
    assert w.bot.state.side is SHORT and w.engine.position(SYM).side is SHORT  # type: ignore[union-attr]
    assert covered(w)


# ====================================================================== defect 3


async def test_an_acknowledged_entry_filling_after_the_wait_is_adopted_and_protected() -> None:
    """The entry is answered NEW and fills 30 s later. Old code waited 10 s, then gave up:
    the position was untracked, unprotected and absent from the risk registry."""
    plan = FaultPlan(orders=ByIntent({"entry": OrderScript(ack=True, fill_delay_s=30.0)}))
    w = World(flat(100, 5), faults=plan)
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.bot.state.side is None and w.risk.open_positions == {SYM: LONG}  # pending, registered
    await w.run({}, until=2)  # the fill arrives
    await w.bot.wait_background()
    assert w.bot.state.side is LONG and w.bot.state.qty == w.engine.position(SYM).quantity  # type: ignore[union-attr]
    assert covered(w) and w.risk.open_positions == {SYM: LONG}
    (entry,) = w.journal.orders(SYM, "ENTRY")
    assert entry.status == "FILLED" and entry.executed_qty == w.bot.state.qty  # outcome journaled


async def test_a_timed_out_entry_with_a_failing_follow_up_read_is_resolved_by_client_id() -> None:
    """The entry executes but its REST call times out, and the first query fails too. Old
    code let the failed ``position()`` read escape ``_open``: untracked and unprotected."""
    plan = FaultPlan(
        orders=ByIntent({"entry": OrderScript(timeout=True)}),
        # position reads: #0 at start, #1 on the signal, #2 the old code's look after the timeout
        calls={("get_order", 0): CallFault(timeout=True), ("position", 2): CallFault(timeout=True)},
    )
    w = World(flat(100, 5), faults=plan)
    await w.start()
    await w.run({1: LONG}, until=1)
    await w.bot.wait_background()
    assert w.bot.state.side is LONG and w.risk.open_positions == {SYM: LONG}
    assert covered(w)


# ====================================================================== defects 5 and 6


async def test_a_partial_deleverage_reduces_the_position_and_keeps_protection() -> None:
    """Half the position is auto-deleveraged (``x=CALCULATED``). Old code took any CALCULATED
    fill as a full close: it booked the trade and cancelled SL and TP on the remainder."""
    w = World(flat(100, 6), faults=FaultPlan(adl={(SYM, 3): 0.5}))
    await w.start()
    await w.run({1: LONG}, until=4)
    await w.bot.wait_background()
    pos = w.engine.position(SYM)
    assert pos is not None and w.bot.state.qty == pytest.approx(pos.quantity)
    assert w.bot.closed_trades == [] and covered(w)
    assert await w.bot.close_position(CloseReason.END_OF_DATA)
    (trade,) = w.bot.closed_trades
    fills = [f for f in w.engine.fills(SYM) if f.side is OrderSide.SELL]
    assert trade.quantity == pytest.approx(sum(f.quantity for f in fills))
    assert trade.realized_pnl == pytest.approx(sum(f.realized_pnl for f in fills))
    exchange_fills_booked(w)


async def test_a_partial_entry_that_completes_later_is_protected_for_its_full_quantity() -> None:
    """40 % of the entry fills at once, the rest 20 s later. Old code sized SL and TP at entry
    and never again: 60 % of the position was unprotected."""
    plan = FaultPlan(orders=ByIntent({"entry": OrderScript(executions=(0.4, 0.6), execution_gap_s=20.0)}))
    w = World(flat(100, 5), faults=plan)
    await w.start()
    await w.run({1: LONG}, until=1)
    await w.run({}, until=2)
    await w.bot.wait_background()
    pos = w.engine.position(SYM)
    assert pos is not None and w.bot.state.qty == pytest.approx(pos.quantity)
    assert covered(w)


async def test_undersized_stops_found_at_recovery_are_replaced_for_the_full_quantity() -> None:
    """Defect 6 at a restart: the exchange shows a long of 10 whose SL and TP cover only 4 (left
    by a partial entry that grew after they were placed). Recovery keeps their trigger prices,
    places an SL and a TP for all 10 first, then cancels the undersized pair."""
    w = World(flat(100, 5))
    w.engine.process_bar(SYM, 0)
    w.engine.market_order(SYM, OrderSide.BUY, 10.0)
    old_sl = w.engine.place_algo(SYM, OrderType.STOP_MARKET, OrderSide.SELL, 4.0, 96.0)
    old_tp = w.engine.place_algo(SYM, OrderType.TAKE_PROFIT_MARKET, OrderSide.SELL, 4.0, 104.0)
    w.engine.pop_events()
    w.i = 0
    await w.start(ctx_at(0, 100.0, None))
    algos = w.algo_orders()
    assert {(o.type, o.quantity, o.trigger_price) for o in algos} == {
        (OrderType.STOP_MARKET, 10.0, 96.0),
        (OrderType.TAKE_PROFIT_MARKET, 10.0, 104.0),
    }
    assert old_sl.algo_id not in {o.algo_id for o in algos}
    assert old_tp.algo_id not in {o.algo_id for o in algos}
    assert w.bot.in_position and w.bot.state.qty == 10.0
    assert covered(w)


# ====================================================================== defect 7 and 9


async def test_a_close_whose_events_never_arrive_is_booked_with_its_real_pnl() -> None:
    """The stop fires and the stream is dead for it. Old code booked a 0 (income history
    skipped, REST result discarded) or nothing at all. Now reconciliation books it from REST."""
    sl_cid = make_client_id(SYM, T0 + 2 * BAR, "sl")
    w = World(
        [*flat(100, 3), SL_BAR, *flat(97, 3)], faults=FaultPlan(events=(EventRule(DROP, client_id=sl_cid),))
    )
    await w.start()
    await w.run({1: LONG}, until=3)
    assert w.bot.closed_trades == []  # nothing arrived
    await w.bot.reconcile()
    (trade,) = w.bot.closed_trades
    fill = next(f for f in w.engine.fills(SYM) if f.side is OrderSide.SELL)
    assert trade.reason is CloseReason.SL  # the triggered order identified by id (algo query)
    assert trade.realized_pnl == pytest.approx(fill.realized_pnl) and trade.realized_pnl < 0
    assert w.risk.daily_pnl == pytest.approx(trade.net_pnl) and w.risk.open_positions == {}
    assert w.algo_orders() == []  # the TP cancelled
    exchange_fills_booked(w)


async def test_partial_close_pnl_is_summed_once_in_a_sync_close() -> None:
    """Half of the position is deleveraged (seen on the stream), then the rest closes with no
    event. Old code lost the partial PnL in the SYNC close (defect 9)."""
    plan = FaultPlan(adl={(SYM, 2): 0.5})
    w = World(flat(100, 6), faults=plan)
    await w.start()
    await w.run({1: LONG}, until=3)
    await w.bot.wait_background()
    # The rest is closed behind the bot's back (a manual close on the exchange, no event).
    pos = w.engine.position(SYM)
    assert pos is not None
    w.engine.market_order(SYM, OrderSide.SELL, pos.quantity, reduce_only=True, client_order_id="manual")
    w.engine.pop_events()
    await w.bot.reconcile()
    (trade,) = w.bot.closed_trades
    fills = [f for f in w.engine.fills(SYM) if f.side is OrderSide.SELL]
    assert len(fills) == 2
    assert trade.quantity == pytest.approx(sum(f.quantity for f in fills))
    assert trade.realized_pnl == pytest.approx(sum(f.realized_pnl for f in fills))
    assert trade.exit_fee == pytest.approx(sum(f.commission for f in fills))
    exchange_fills_booked(w)


# ====================================================================== defect 10


async def test_a_failed_sibling_cancel_is_retried_until_confirmed() -> None:
    """The TP's cancel after the stop fired fails. Old code logged it at DEBUG and forgot it:
    the old TP stayed live and could hit the next position."""
    plan = FaultPlan(calls={("cancel_conditional", 0): CallFault(fail_code=-1008)})
    w = World([*flat(100, 3), SL_BAR, *flat(97, 3)], faults=plan)
    await w.start()
    await w.run({1: LONG}, until=3)
    await w.bot.wait_background()
    (trade,) = w.bot.closed_trades
    assert trade.reason is CloseReason.SL
    assert w.journal.events("cancel_failed", SYM)
    assert w.algo_orders() == []  # retried and confirmed


async def test_reconcile_on_a_flat_symbol_cancels_the_bots_orphans() -> None:
    """Every cancel after the close fails for a while; old ``reconcile()`` ignored a flat
    symbol, so the orphans stayed. Now a flat reconcile cancels them."""
    plan = FaultPlan(calls={("cancel_conditional", k): CallFault(fail_code=-1008) for k in range(4)})
    w = World([*flat(100, 3), SL_BAR, *flat(97, 3)], faults=plan)
    await w.start()
    await w.run({1: LONG}, until=3)
    await w.bot.wait_background()
    assert w.algo_orders() != []  # the TP survived every retry so far
    await w.bot.reconcile()
    assert w.algo_orders() == []


# ====================================================================== defect 11 (restart)


async def test_a_restart_never_counts_accounted_executions_again(tmp_path: Path) -> None:
    """A reverse closes and re-opens in the same millisecond; the process restarts; then the
    new position closes with no event. Old code kept ``_accounted`` in memory and summed the
    income rows from the entry millisecond on: the previous trade's rows were counted again."""
    path = tmp_path / "journal.sqlite"
    w = World(REVERSE_BARS, journal=Journal(path), faults=FaultPlan())
    await w.start()
    await w.run({1: LONG, 3: SHORT}, until=4)
    assert w.bot.state.side is SHORT
    (first,) = w.bot.closed_trades
    w.crash()  # restart: a new bot on the same journal and exchange
    bot2 = await w.restart(ctx_at(4, 101.0, None))
    pos = w.engine.position(SYM)
    assert pos is not None
    w.engine.market_order(SYM, OrderSide.BUY, pos.quantity, reduce_only=True, client_order_id="manual")
    w.engine.pop_events()
    await bot2.reconcile()
    (second,) = bot2.closed_trades
    own = [f for f in w.engine.fills(SYM) if f.time_ms >= second.entry_time_ms and f.side is OrderSide.BUY]
    assert second.realized_pnl == pytest.approx(sum(f.realized_pnl for f in own))
    assert second.realized_pnl != pytest.approx(second.realized_pnl + first.realized_pnl)


# ====================================================================== defect 12


async def test_a_lost_stop_is_replaced_even_when_the_bot_is_busy() -> None:
    """The stop is cancelled on the exchange while the bot is inside a reverse whose close
    keeps expiring. Old ``_reprotect`` returned at once when busy: the stop was never
    re-placed. Now the re-placement waits for the bot and then runs."""
    w = World(REVERSE_BARS, faults=expiring_closes())
    await w.start()
    await w.run({1: LONG}, until=2)
    sl_id = w.bot.state.sl_id
    w.bot._busy = True  # an entry or close in flight
    w.engine.cancel_algo(SYM, sl_id)
    w.ex.publish_pending()
    await w.ex.drain()
    assert w.bot.state.sl_id == 0
    w.bot._busy = False
    await w.bot.wait_background()
    assert covered(w) and w.bot.state.sl_id not in (0, sl_id)


# ====================================================================== chaos, 180 days, seed 23


async def test_an_entry_execution_read_from_rest_keeps_its_fee_across_a_restart(tmp_path: Path) -> None:
    """The entry's execution report never came (a silent user stream): the bot read the execution
    from ``userTrades`` and counted it, then the process died before the trade was booked. Old
    code persisted the count but not the execution: the restarted process adopted the position
    with an entry fee of 0, and the trade's fees were short by it (found by the 180-day chaos
    run). Now the execution is journaled before it is counted, and recovery finds it by order id."""
    entry_cid = make_client_id(SYM, T0 + 2 * BAR, "entry")
    plan = FaultPlan(events=(EventRule(DROP, client_id=entry_cid, execution_type="TRADE"),))
    w = World(flat(100, 5), journal=Journal(tmp_path / "journal.sqlite"), faults=plan)
    await w.start()
    await w.run({1: LONG}, until=2)
    (entry_fill,) = [f for f in w.engine.fills(SYM) if f.side is OrderSide.BUY]
    assert w.bot._entry_fee(w.bot._pos) == pytest.approx(entry_fill.commission)  # type: ignore[arg-type]
    w.crash()  # before any trade is booked
    bot2 = await w.restart(ctx_at(2, 100.0, None))
    assert bot2.state.entry_time_ms == entry_fill.time_ms
    assert bot2._entry_fee(bot2._pos) == pytest.approx(entry_fill.commission)  # type: ignore[arg-type]
    assert covered(w)


# ====================================================================== defect 15


async def test_recovery_after_a_crash_before_the_entry_result_uses_the_journaled_fills(
    tmp_path: Path,
) -> None:
    """The process died between the entry call and journaling its answer (the ENTRY row says
    REQUESTED, no order id), and the stop is gone. Old code lost the entry time and fee (it
    needed the order id) and, without a candle, fell back to ±1 % stops. Now the entry's
    executions are found by client id, and the stop comes from the preloaded candles' ATR."""
    path = tmp_path / "journal.sqlite"
    w = World(flat(100, 5), journal=Journal(path))
    await w.start()
    await w.run({1: LONG}, until=2)
    (entry_fill,) = [f for f in w.engine.fills(SYM) if f.side is OrderSide.BUY]
    w.journal.flush()
    w.journal._db.execute("UPDATE orders SET status = 'REQUESTED', order_id = NULL WHERE kind = 'ENTRY'")
    w.engine.cancel_algo(SYM, w.bot.state.sl_id)
    w.engine.pop_events()
    w.crash()  # the crashed process no longer hears the exchange (nor writes its journal)
    bot2 = await w.restart(ctx_at(2, 100.0, None, atr=3.0))  # the preloaded candles' ATR is 3
    st = bot2.state
    assert st.entry_time_ms == entry_fill.time_ms
    assert bot2._entry_fee(bot2._pos) == pytest.approx(entry_fill.commission)  # type: ignore[arg-type]
    sl = next(o for o in w.algo_orders() if o.type.value == "STOP_MARKET")
    mult = w.cfg.params_for(SYM).atr_sl_mult
    assert sl.trigger_price == pytest.approx(entry_fill.price - mult * 3.0, abs=0.01)
    assert covered(w)


# ====================================================================== found by the chaos test


async def test_a_partial_close_counted_before_a_restart_stays_in_the_trade(tmp_path: Path) -> None:
    """A deleverage takes half of the position; the process dies before the position closes;
    the restarted bot adopts the rest. The deleverage's execution is already accounted (the
    journal says so), but its realised PnL lived only in the dead process's memory: the booked
    trade had half the quantity and lacked the deleverage's PnL (issue 10 §4 chaos run, seed
    20261202). Now recovery counts the accounted closing executions since the entry again."""
    path = tmp_path / "journal.sqlite"
    w = World(REVERSE_BARS, journal=Journal(path), faults=FaultPlan())
    await w.start()
    await w.run({1: LONG}, until=2)
    pos = w.engine.position(SYM)
    assert pos is not None
    entry_qty = pos.quantity
    w.engine.deleverage(SYM, entry_qty / 2)
    w.ex.publish_pending()
    await w.ex.drain()
    assert w.bot.state.qty == pytest.approx(entry_qty - entry_qty / 2)
    w.crash()  # restart: a new bot on the same journal and exchange
    bot2 = await w.restart(ctx_at(2, 100.0, None))
    rest = w.engine.position(SYM)
    assert rest is not None
    w.engine.market_order(SYM, OrderSide.SELL, rest.quantity, reduce_only=True, client_order_id="manual")
    w.engine.pop_events()
    await bot2.reconcile()
    (trade,) = bot2.closed_trades
    closes = [f for f in w.engine.fills(SYM) if f.side is OrderSide.SELL]
    assert len(closes) == 2
    assert trade.quantity == pytest.approx(entry_qty)
    assert trade.realized_pnl == pytest.approx(sum(f.realized_pnl for f in closes))
    assert trade.exit_fee == pytest.approx(sum(f.commission for f in closes))


async def test_a_take_profit_filled_in_parts_whose_last_execution_is_withheld_is_not_re_placed() -> None:
    """Found by the 180-day chaos run: the TP triggers and fills in three executions (20, 20, 10)
    and the stream withholds the last one. The bot saw 10 "left" and, with the TP gone from the
    book, re-placed a TP for it: rejected (it would trigger at once) three times, twice, then an
    emergency close rejected as reduce-only on a flat account, and an alert for a position its
    own TP had closed. Now it reads the venue first: flat, so nothing is placed; ``reconcile``
    books one TP trade of the full quantity with every execution."""
    tp_cid = make_client_id(SYM, T0 + 2 * BAR, "tp")
    withheld = EventRule(DROP, kind="ORDER_TRADE_UPDATE", client_id=tp_cid, status="FILLED")
    w = World(
        [*flat(100, 3), (100, 112, 99.5, 110), *flat(110, 2)],
        faults=FaultPlan(events=(withheld,)),
        settings=replace(EXACT, max_fill_qty_per_execution=20.0),
    )
    await w.start()
    await w.run({1: LONG}, until=5)
    await w.bot.wait_background()
    assert w.engine.position(SYM) is None and w.bot.in_position  # the last 10 not seen yet
    assert [o.kind for o in w.journal.orders(SYM)] == ["ENTRY", "SL", "TP"]  # nothing re-placed
    kinds = [e.kind for e in w.journal.events(symbol=SYM)]
    assert "emergency_close" not in kinds and "protection_not_needed" in kinds
    await w.bot.reconcile()
    (trade,) = w.bot.closed_trades
    assert trade.reason is CloseReason.TP and trade.quantity == pytest.approx(50.0)
    closes = [f for f in w.engine.fills(SYM) if f.side is OrderSide.SELL]
    assert [f.quantity for f in closes] == [20.0, 20.0, 10.0]
    assert trade.realized_pnl == pytest.approx(sum(f.realized_pnl for f in closes))
    assert w.algo_orders() == [] and w.risk.open_positions == {}
    exchange_fills_booked(w)
