"""A process killed mid-round-trip: the restarted bot books every execution exactly once.

Found by the chaos test (issue 10 §4, CI run of 2026-12-02): a SIGKILL between the partial fills
of a REVERSE close left the close's executions in no trade. The restarted bot found the symbol
flat, cancelled the orphans and went on; the round trip's PnL was lost. Each test emulates what
the dead process had persisted (its journal rows) and what the venue did meanwhile, then starts
a new ``SymbolBot`` on the same journal and exchange (``engine/unbooked.py``, ``recovery.py``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from perpbot.domain.types import ClosedTrade, CloseReason, Fill, OrderSide, Side
from perpbot.engine.bot import SymbolBot
from perpbot.engine.journal import Journal
from perpbot.exchange.sim.faults import FaultPlan
from perpbot.exchange.sim.settings import SimSettings

from .factories import SYM, ctx_at, flat
from .harness import LONG, SHORT, World

# Every order fills in executions of at most 20: the 50-unit entry and its close in three each.
SPLIT = SimSettings(slippage_bps=0.0, max_fill_qty_per_execution=20.0)
BARS = [*flat(100, 3), (100, 101, 99.5, 101), *flat(101, 4)]
STOP_BAR = (100, 100, 90, 92)  # falls through the 96 stop


async def long_world(path: Path, bars: list[tuple[float, float, float, float]] = BARS) -> World:
    w = World(bars, journal=Journal(path), settings=SPLIT, faults=FaultPlan())
    await w.start()
    await w.run({1: LONG}, until=2)
    assert w.bot.state.side is LONG and w.bot.state.qty == 50.0
    return w


def crash(w: World) -> None:
    """SIGKILL (``World.crash``); the events the venue had not delivered yet are lost too."""
    w.crash()
    w.engine.pop_events()


async def restart(w: World) -> SymbolBot:
    return await w.restart(ctx_at(w.i, float(w.bars[w.i, 3]), None))


def reverse_close_in_flight(w: World, *, accounted: int) -> list[Fill]:
    """The dead process's REVERSE close: journaled, sent, executed by the venue in three parts,
    of which the first ``accounted`` had been counted (persisted) when the process died."""
    now = w.clock.now_ms()
    cid = f"pb-{SYM}-x-close"
    row = w.journal.record_order_request(
        time_ms=now, symbol=SYM, kind="REVERSE", order_type="MARKET", side="SELL", qty=50.0, client_id=cid
    )
    res = w.engine.market_order(SYM, OrderSide.SELL, 50.0, reduce_only=True, client_order_id=cid)
    w.journal.record_order_result(
        row,
        time_ms=now,
        status=res.status.value,
        order_id=res.order_id,
        avg_price=res.avg_price,
        executed_qty=res.executed_qty,
    )
    closes = [f for f in w.engine.fills(SYM) if f.order_id == res.order_id]
    assert len(closes) == 3
    w.journal.record_accounted(SYM, [f"t:{f.trade_id}" for f in closes[:accounted]], now)
    return closes


def assert_whole_round_trip(w: World, bot: SymbolBot, reason: CloseReason) -> None:
    (trade,) = bot.closed_trades
    buys = [f for f in w.engine.fills(SYM) if f.side is OrderSide.BUY]
    sells = [f for f in w.engine.fills(SYM) if f.side is OrderSide.SELL]
    assert trade.reason is reason
    assert trade.quantity == pytest.approx(50.0)
    assert trade.realized_pnl == pytest.approx(sum(f.realized_pnl for f in sells))
    assert trade.exit_fee == pytest.approx(sum(f.commission for f in sells))
    assert trade.entry_fee == pytest.approx(sum(f.commission for f in buys))
    assert trade.entry_time_ms == min(f.time_ms for f in buys)
    keys = set(bot._journal.accounted_keys(SYM))
    assert all(f"t:{f.trade_id}" in keys for f in w.engine.fills(SYM))  # each counted once
    assert bot._journal.closed_trades(SYM) == [trade]
    assert not w.risk.is_open(SYM)
    assert w.risk.daily_pnl == pytest.approx(trade.net_pnl)
    assert w.algo_orders() == []  # the dead position's SL and TP are gone


@pytest.mark.parametrize("accounted", [0, 2, 3])
async def test_a_reverse_close_cut_by_a_kill_is_booked_once_at_the_flat_start(
    tmp_path: Path, accounted: int
) -> None:
    """Killed during a REVERSE close after ``accounted`` of its three executions were counted
    (0: none of its events handled; 3: all counted, the trade row not yet written). The venue
    is flat. Old code cancelled the orphans and booked nothing: the round trip was lost."""
    path = tmp_path / "journal.sqlite"
    w = await long_world(path)
    reverse_close_in_flight(w, accounted=accounted)
    crash(w)
    bot = await restart(w)
    assert_whole_round_trip(w, bot, CloseReason.REVERSE)
    events = [e.kind for e in bot._journal.events(symbol=SYM)]
    assert events.count("unbooked_round_trip") == 1
    # A second restart finds the entry booked and books nothing more.
    bot._journal.close()
    again = await restart(w)
    assert again.closed_trades == [] and len(again._journal.closed_trades(SYM)) == 1


async def test_a_stop_that_fired_while_the_process_was_dead_is_booked_as_sl(tmp_path: Path) -> None:
    """The process dies with its position protected; the stop fires before the restart and
    none of its events is ever heard. The flat start books the round trip as an SL trade."""
    path = tmp_path / "journal.sqlite"
    w = await long_world(path, [*flat(100, 3), STOP_BAR, *flat(92, 3)])
    crash(w)
    w.i += 1
    w.clock.set(int(w.t[w.i]) + 15 * 60_000)
    w.ex.process_bar(SYM, w.i)
    assert w.engine.position(SYM) is None
    bot = await restart(w)
    assert_whole_round_trip(w, bot, CloseReason.SL)


async def test_a_booked_round_trip_is_never_booked_again_after_a_restart(tmp_path: Path) -> None:
    """The ordinary case: a REVERSE (its new entry in the same millisecond as the old exit),
    then the short closed and booked before the process stopped. Nothing new is booked at the
    flat start (trades name their entry order, so equal timestamps cannot confuse it)."""
    path = tmp_path / "journal.sqlite"
    w = await long_world(path)
    await w.run({3: SHORT}, until=3)
    assert w.bot.state.side is SHORT
    w.engine.market_order(SYM, OrderSide.BUY, w.bot.state.qty, reduce_only=True, client_order_id="manual")
    w.ex.publish_pending()
    await w.ex.drain()
    booked = w.bot._journal.closed_trades(SYM)
    assert [t.side for t in booked] == [LONG, SHORT]
    crash(w)
    bot = await restart(w)
    assert bot.closed_trades == []
    assert bot._journal.closed_trades(SYM) == booked
    assert not [e for e in bot._journal.events(symbol=SYM) if e.kind == "unbooked_round_trip"]


async def test_a_journal_from_before_trades_named_their_entry_gets_the_column(tmp_path: Path) -> None:
    """Older journals lack ``trades.entry_order_id``: opening one adds it (default 0), and the
    flat start then recognises booked entries by time as before."""
    path = tmp_path / "journal.sqlite"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE trades (id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, side TEXT NOT NULL,"
        " entry_time_ms INTEGER NOT NULL, exit_time_ms INTEGER NOT NULL, entry_price REAL NOT NULL,"
        " exit_price REAL NOT NULL, qty REAL NOT NULL, realized_pnl REAL NOT NULL, entry_fee REAL NOT NULL,"
        " exit_fee REAL NOT NULL, funding REAL NOT NULL, net_pnl REAL NOT NULL, reason TEXT NOT NULL)"
    )
    con.commit()
    con.close()
    j = Journal(path)
    cols = [r[1] for r in j._db.execute("PRAGMA table_info(trades)")]
    assert cols[-1] == "entry_order_id"
    j.close()


async def test_closes_executed_while_dead_stay_in_the_adopted_positions_trade(tmp_path: Path) -> None:
    """Part of the position is closed while the process is dead (nobody counted those
    executions); the restart adopts the rest. Old code booked the trade without the dead
    time's closes: their executions were in no trade."""
    path = tmp_path / "journal.sqlite"
    w = await long_world(path)
    crash(w)
    w.engine.market_order(SYM, OrderSide.SELL, 20.0, reduce_only=True, client_order_id="manual-1")
    w.engine.pop_events()
    bot = await restart(w)
    assert bot.state.qty == pytest.approx(30.0)
    w.engine.market_order(SYM, OrderSide.SELL, 30.0, reduce_only=True, client_order_id="manual-2")
    w.engine.pop_events()
    await bot.reconcile()
    (trade,) = bot.closed_trades
    sells = [f for f in w.engine.fills(SYM) if f.side is OrderSide.SELL]
    assert trade.quantity == pytest.approx(50.0)
    assert trade.realized_pnl == pytest.approx(sum(f.realized_pnl for f in sells))
    keys = set(bot._journal.accounted_keys(SYM))
    assert all(f"t:{f.trade_id}" in keys for f in w.engine.fills(SYM))


async def test_an_entry_whose_answer_was_never_journaled_is_found_by_client_id(tmp_path: Path) -> None:
    """The process died between the entry call and its journaled answer (no order id), and the
    stop fired while it was dead. The entry is found on the venue by its client id."""
    path = tmp_path / "journal.sqlite"
    w = await long_world(path, [*flat(100, 3), STOP_BAR, *flat(92, 3)])
    w.journal.flush()
    w.journal._db.execute("UPDATE orders SET status = 'REQUESTED', order_id = NULL WHERE kind = 'ENTRY'")
    crash(w)
    w.i += 1
    w.clock.set(int(w.t[w.i]) + 15 * 60_000)
    w.ex.process_bar(SYM, w.i)
    bot = await restart(w)
    assert_whole_round_trip(w, bot, CloseReason.SL)


async def test_an_entry_the_venue_never_saw_books_nothing(tmp_path: Path) -> None:
    """The last ENTRY row is a request whose answer never came and the venue does not know its
    client id (it never arrived): nothing is booked, the start goes on. Not arrived *yet* may
    still execute (a timeout): the entry stays pending, registered, until a query that still
    finds nothing (the next reconcile pass) releases it."""
    path = tmp_path / "journal.sqlite"
    w = World(BARS, journal=Journal(path), settings=SPLIT, faults=FaultPlan())
    await w.start()
    w.journal.record_order_request(
        time_ms=w.clock.now_ms(),
        symbol=SYM,
        kind="ENTRY",
        order_type="MARKET",
        side="BUY",
        qty=50.0,
        client_id=f"pb-{SYM}-lost-entry",
    )
    crash(w)
    bot = await restart(w)
    assert bot.closed_trades == [] and bot.state.side is None
    assert w.risk.is_open(SYM)  # pending
    await bot.reconcile()
    assert not w.risk.is_open(SYM) and bot.at_rest


def previous_trade(w: World, *, exit_after_request_ms: int, entry_order_id: int) -> None:
    """The round trip before the journal's last ENTRY, booked by the dead process. Its exit is
    stamped by the venue's clock, the ENTRY's request by ours: with the venue ahead, the exit
    reads later than the request although it came first (a reverse's re-entry follows its close
    by a few milliseconds)."""
    rec = w.journal.last_order(SYM, ("ENTRY",))
    assert rec is not None
    prev = ClosedTrade(
        symbol=SYM,
        side=Side.SHORT,
        entry_time_ms=rec.time_ms - 3_600_000,
        exit_time_ms=rec.time_ms + exit_after_request_ms,
        entry_price=100.0,
        exit_price=100.0,
        quantity=1.0,
        realized_pnl=0.0,
        entry_fee=0.0,
        exit_fee=0.0,
        funding=0.0,
        reason=CloseReason.REVERSE,
    )
    w.journal.record_trade(prev, entry_order_id=entry_order_id)


@pytest.mark.parametrize("venue_ahead_ms", [0, 300, 5_000])
async def test_a_venue_clock_ahead_of_ours_never_hides_an_unbooked_entry(
    tmp_path: Path, venue_ahead_ms: int
) -> None:
    """The previous trade names its own entry order, so whether the last ENTRY was booked is
    known exactly, whatever the two clocks say. Old code also compared the previous exit (the
    venue's stamp) with the ENTRY's request (ours): with the venue 300 ms ahead, the cut round
    trip looked booked and was lost with the closes already counted."""
    w = await long_world(tmp_path / "journal.sqlite")
    previous_trade(w, exit_after_request_ms=venue_ahead_ms, entry_order_id=123456789)
    reverse_close_in_flight(w, accounted=3)
    crash(w)
    bot = await restart(w)
    (trade,) = bot.closed_trades
    assert trade.quantity == pytest.approx(50.0)
    assert trade.realized_pnl == pytest.approx(
        sum(f.realized_pnl for f in w.engine.fills(SYM) if f.side is OrderSide.SELL)
    )


@pytest.mark.parametrize("venue_ahead_ms", [0, 300])
async def test_an_adopted_position_keeps_its_journaled_entry_whatever_the_clocks(
    tmp_path: Path, venue_ahead_ms: int
) -> None:
    """Adoption at a restart takes the journaled entry (order id, fee, first execution's time)
    unless a trade booked it; old code dropped it on the same clock comparison, and the trade
    then lost its entry fee and named no entry."""
    w = await long_world(tmp_path / "journal.sqlite")
    rec = w.journal.last_order(SYM, ("ENTRY",))
    assert rec is not None and rec.order_id
    previous_trade(w, exit_after_request_ms=venue_ahead_ms, entry_order_id=123456789)
    crash(w)
    bot = await restart(w)
    buys = [f for f in w.engine.fills(SYM) if f.side is OrderSide.BUY]
    pos = bot._pos
    assert pos is not None and pos.entry_order_id == rec.order_id
    assert pos.entry_fee == pytest.approx(sum(f.commission for f in buys))
    assert pos.entry_time_ms == min(f.time_ms for f in buys)


async def test_a_trade_that_names_no_entry_still_marks_older_entries_booked(tmp_path: Path) -> None:
    """Where nothing exact exists (the last trade names no entry order: an adopted position
    whose entry was unknown, or a journal from before the column), a trade that closed after
    the ENTRY was requested booked it: the flat start books nothing more."""
    w = await long_world(tmp_path / "journal.sqlite")
    previous_trade(w, exit_after_request_ms=60_000, entry_order_id=0)
    reverse_close_in_flight(w, accounted=3)
    crash(w)
    bot = await restart(w)
    assert bot.closed_trades == []


async def test_an_entry_booked_by_a_process_that_asked_the_venue_is_not_booked_again(tmp_path: Path) -> None:
    """The ENTRY's answer never reached the journal (no order id there), but the process that
    booked its round trip learnt the order id from the venue and the trade names it. A flat
    start asks the venue for the order id too and finds that trade: nothing is booked twice."""
    w = await long_world(tmp_path / "journal.sqlite", [*flat(100, 3), STOP_BAR, *flat(92, 3)])
    await w.run({}, until=4)
    assert len(w.bot.closed_trades) == 1 and w.engine.position(SYM) is None
    w.journal.flush()
    w.journal._db.execute("UPDATE orders SET status = 'REQUESTED', order_id = NULL WHERE kind = 'ENTRY'")
    crash(w)
    bot = await restart(w)
    assert bot.closed_trades == [] and len(bot._journal.closed_trades(SYM)) == 1
