"""SymbolBot: the SPEC §8 state machine with the §13 corrections, driven through the real
simulated exchange (``SimExchange`` over ``MatchingEngine``) wherever possible, and through a
small scripted port where a scenario needs an exchange that misbehaves in a precise way.

Time line of a simulated step (what the backtest runner does): set the clock to the close of bar
``i``, ``process_bar(i)`` (funding, triggers), ``drain()``, ``on_candle(ctx_i)``, ``drain()``.
Market orders sent during ``on_candle(ctx_i)`` fill at ``open[i+1]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from perpbot.config import AppConfig
from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import (
    ClosedTrade,
    CloseReason,
    ConditionalOrder,
    Income,
    OrderResult,
    OrderSide,
    OrderType,
    Position,
    Side,
)
from perpbot.engine.bot import SymbolBot
from perpbot.engine.clock import SimClock
from perpbot.engine.journal import Journal
from perpbot.engine.notifier import RecordingNotifier
from perpbot.engine.risk import RiskManager
from perpbot.exchange.errors import ORDER_WOULD_IMMEDIATELY_TRIGGER, ExchangeError
from perpbot.exchange.port import ExchangePort
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.settings import SimSettings
from perpbot.ml.features import SIDE_INDEX

from .factories import BAR, OHLC, SL_BAR, SYM, T0, closed_trade, ctx_at, flat, order_update
from .harness import (
    EXACT,
    LONG,
    SHORT,
    DoubleDelivery,
    FailingProtection,
    FakePort,
    HoldingExchange,
    ScriptedFilter,
    World,
    assert_trade_accounting,
    fake_bot,
    protected_long_port,
)

# ====================================================================== entry


async def test_entry_uses_the_fill_price_and_places_sl_and_tp() -> None:
    w = World(flat(100.0, 6), settings=SimSettings(slippage_bps=1.0))
    await w.start()
    await w.run({1: LONG})
    pos = w.engine.position(SYM)
    assert pos is not None and pos.side is LONG
    fill = 100.0 * (1 + 1e-4)  # open[2] plus one basis point of adverse slippage
    st = w.bot.state
    assert st.side is LONG
    assert st.entry_price == pytest.approx(fill) and st.entry_price != 100.0  # not the candle close
    assert st.qty == pytest.approx(pos.quantity) == pytest.approx(50.0)  # 1000·0.5·10/100
    # Stops from the FILL price, tick-rounded: 100.01 ∓ 2·ATR(2).
    assert (st.sl_price, st.tp_price) == (96.01, 104.01)
    orders = {o.type: o for o in w.algo_orders()}
    sl, tp = orders[OrderType.STOP_MARKET], orders[OrderType.TAKE_PROFIT_MARKET]
    assert (sl.algo_id, sl.trigger_price, sl.side, sl.reduce_only) == (st.sl_id, 96.01, OrderSide.SELL, True)
    assert (tp.algo_id, tp.trigger_price, tp.quantity) == (st.tp_id, 104.01, pos.quantity)
    assert w.engine.leverage(SYM) == 10 and w.engine.margin_type(SYM) == "ISOLATED"
    assert w.risk.open_positions == {SYM: LONG}
    kinds = [(o.kind, o.status) for o in w.journal.orders(SYM)]
    assert kinds == [("ENTRY", "FILLED"), ("SL", "NEW"), ("TP", "NEW")]
    assert w.notifier.kinds() == ["entry"]
    assert "`100.0100`" in w.notifier.texts("entry")[0]


async def test_zero_allocation_does_not_trade() -> None:
    """A near-empty account: the min-notional bump would need more margin than B/N; no order."""
    w = World(flat(100.0, 4), settings=replace(EXACT, initial_balance=0.4))
    await w.start()
    await w.run({1: LONG})
    assert w.engine.position(SYM) is None
    assert w.journal.orders(SYM) == []


async def test_no_usable_atr_means_no_entry() -> None:
    w = World(flat(100.0, 4))
    await w.start()
    await w.step()
    await w.step(LONG, atr=float("nan"))
    await w.step()
    assert w.engine.position(SYM) is None


# ====================================================================== candle scenarios


class Expect(NamedTuple):
    """One expected closed trade, every figure written out by hand (freqtrade-style tables)."""

    side: Side
    reason: CloseReason
    entry: float
    exit: float
    qty: float
    entry_fee: float
    exit_fee: float
    funding: float
    net: float
    held_bars: int  # exit time − entry time, in candles


@dataclass
class Scenario:
    name: str
    bars: list[OHLC]
    signals: dict[int, Side]
    expected: list[Expect]
    atr: float = 2.0
    settings: SimSettings = EXACT
    funding: list[float] | None = None
    open_at_end: Side | None = None
    filter_script: tuple[bool, ...] = ()  # the model's answers in order (empty: no model)
    check: Any = None


def _partial_check(w: World, trades: list[ClosedTrade]) -> None:
    fills = w.engine.fills(SYM)
    assert len(fills) > 4  # the entry and the stop were both split into several executions


# Every scenario: 1000 USDT, one symbol, leverage 10, margin ratio 0.5 → 50 units at 100 (notional
# 5000), no slippage, taker fee 0.05 %. The signal at bar 1 fills at open[2] = 100 (entry fee 2.5)
# and its stops are 100 ∓ 2·ATR; entry time = close of bar 1.
REVERSE_BARS = [*flat(100, 3), (100, 100.5, 99.5, 99.5), *flat(99.5, 3)]  # no stop touched
SL_EXIT = Expect(LONG, CloseReason.SL, 100.0, 96.0, 50.0, 2.5, 2.4, 0.0, -200 - 2.5 - 2.4, 2)
REVERSE_EXIT = Expect(LONG, CloseReason.REVERSE, 100.0, 99.5, 50.0, 2.5, 2.4875, 0.0, -25 - 2.5 - 2.4875, 2)

SCENARIOS = [
    Scenario("SL hit", [*flat(100, 3), SL_BAR, *flat(97, 2)], {1: LONG}, [SL_EXIT]),
    Scenario(
        "TP hit",
        [*flat(100, 3), (100, 105, 99.5, 104.5), *flat(104.5, 2)],
        {1: LONG},
        [Expect(LONG, CloseReason.TP, 100.0, 104.0, 50.0, 2.5, 2.6, 0.0, 200 - 2.5 - 2.6, 2)],
    ),
    Scenario(
        "both in one bar: stop first",
        [*flat(100, 3), (100, 105, 95, 100), *flat(100, 2)],
        {1: LONG},
        [SL_EXIT],
    ),
    Scenario(
        "short TP",
        [*flat(100, 3), (100, 100.5, 95, 96), *flat(96, 2)],
        {1: SHORT},
        [Expect(SHORT, CloseReason.TP, 100.0, 96.0, 50.0, 2.5, 2.4, 0.0, 200 - 2.5 - 2.4, 2)],
    ),
    Scenario(
        "gap through the stop",  # opens at 93, below the stop at 96: filled at the open
        [*flat(100, 3), (93, 94, 92, 93), *flat(93, 2)],
        {1: LONG},
        [Expect(LONG, CloseReason.SL, 100.0, 93.0, 50.0, 2.5, 2.325, 0.0, -350 - 2.5 - 2.325, 2)],
    ),
    Scenario(
        "reverse with re-entry",  # closed at open[4] = 99.5, SHORT re-opened there
        REVERSE_BARS,
        {1: LONG, 3: SHORT},
        [REVERSE_EXIT],
        open_at_end=SHORT,
        filter_script=(True, True),
    ),
    Scenario(
        "reverse without re-entry (the model rejects the new side)",
        REVERSE_BARS,
        {1: LONG, 3: SHORT},
        [REVERSE_EXIT],
        filter_script=(True, False),
    ),
    Scenario(
        "partial fills",  # entry and stop split into executions of at most 7 units
        [*flat(100, 3), SL_BAR, *flat(97, 2)],
        {1: LONG},
        [SL_EXIT],
        settings=replace(EXACT, max_fill_qty_per_execution=7.0),
        check=_partial_check,
    ),
    Scenario(
        "funding across a position",  # one settlement at 08:00 (bar 32): a long pays 50·100·0.0001
        [*flat(100, 34), SL_BAR, *flat(97, 2)],
        {1: LONG},
        [Expect(LONG, CloseReason.SL, 100.0, 96.0, 50.0, 2.5, 2.4, -0.5, -200 - 2.5 - 2.4 - 0.5, 33)],
        funding=[0.0001] * 37,
    ),
    Scenario(
        # ATR 8 puts the stop at 84; isolated margin 500, LP = (5000 − 500)/(50·0.995) ≈ 90.4523.
        # The gap to 80 liquidates at LP: rp = (LP − 100)·50; the rest of the margin (500 + rp)
        # is the clearance fee, so the trade loses exactly its margin plus the entry fee.
        "liquidation before a far stop",
        [*flat(100, 3), (80, 81, 79, 80), *flat(80, 2)],
        {1: LONG},
        [
            Expect(
                LONG,
                CloseReason.LIQUIDATION,
                100.0,
                4500 / 49.75,
                50.0,
                2.5,
                500 + (4500 / 49.75 - 100) * 50,
                0.0,
                -502.5,
                2,
            )
        ],
        atr=8.0,
    ),
    Scenario(
        "original type reported",
        [*flat(100, 3), SL_BAR, *flat(97, 2)],
        {1: LONG},
        [SL_EXIT],
        settings=replace(EXACT, report_original_type=True),
    ),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_candle_scenarios(sc: Scenario) -> None:
    f = ScriptedFilter(script=sc.filter_script) if sc.filter_script else None
    w = World(sc.bars, settings=sc.settings, funding=sc.funding, entry_filter=f)
    await w.start()
    await w.run(sc.signals, atr=sc.atr)
    got = [
        Expect(
            t.side,
            t.reason,
            t.entry_price,
            t.exit_price,
            t.quantity,
            t.entry_fee,
            t.exit_fee,
            t.funding,
            t.net_pnl,
            (t.exit_time_ms - t.entry_time_ms) // BAR,
        )
        for t in w.bot.closed_trades
    ]
    assert len(got) == len(sc.expected)
    for g, e in zip(got, sc.expected, strict=True):
        assert (g.side, g.reason, g.held_bars) == (e.side, e.reason, e.held_bars)
        assert g[2:9] == pytest.approx(e[2:9], rel=1e-12, abs=1e-9)  # prices, qty, fees, funding, net
    for t in w.bot.closed_trades:
        assert t.entry_time_ms == T0 + 2 * BAR  # acted on at the close of the signal bar
        assert_trade_accounting(t)
    if f is not None:
        assert len(f.calls) == len(sc.filter_script)  # the model was asked once per entry
    assert w.journal.closed_trades(SYM) == w.bot.closed_trades
    assert w.bot.state.side is sc.open_at_end
    if sc.open_at_end is None:
        # Flat: every income row of the symbol is in exactly one trade, and nothing is resting.
        assert sum(t.net_pnl for t in w.bot.closed_trades) == pytest.approx(w.income_total(), abs=1e-9)
        assert w.engine.balance() == pytest.approx(1000.0 + w.income_total())
        assert w.engine.position(SYM) is None
        assert w.algo_orders() == []
        assert w.risk.open_positions == {}
    else:
        assert w.risk.open_positions == {SYM: sc.open_at_end}
        assert len(w.algo_orders()) == 2  # the new position's SL and TP, the old ones cancelled
    assert w.risk.daily_pnl == pytest.approx(sum(t.net_pnl for t in w.bot.closed_trades))
    if sc.check is not None:
        sc.check(w, w.bot.closed_trades)


async def test_sl_close_cancels_the_sibling_and_notifies() -> None:
    w = World([*flat(100, 3), SL_BAR, *flat(97, 2)])
    await w.start()
    await w.run({1: LONG})
    (trade,) = w.bot.closed_trades
    assert trade.entry_fee == pytest.approx(100 * 50 * 0.0005)
    assert trade.exit_fee == pytest.approx(96 * 50 * 0.0005)
    assert trade.net_pnl == pytest.approx(-200 - 2.5 - 2.4)
    assert w.algo_orders() == []
    assert w.notifier.kinds() == ["entry", "close"]
    text = w.notifier.texts("close")[0]
    assert text.startswith("❌") and "SL close" in text and "-204.9000" in text and "-200.0000" in text


async def test_a_liquidation_fee_is_booked_once_when_the_next_entry_shares_its_millisecond() -> None:
    """Found by tests/backtest/test_invariants.py: a position liquidated in a candle and a new
    entry sent at that candle's close share one millisecond, so the first clearance fee lay inside
    the second trade's income window and was booked twice (trade fees > the wallet's fees).

    The first long (ATR 8, stop 84) is liquidated by the gap to 80 in candle 3; the LONG signal
    of that candle re-enters at its close, at open 80, and is liquidated again inside candle 4
    (LP ≈ 72.36 above its stop at 64). A base of 20 000 keeps the 5 % loss limit out of the way."""
    w = World([*flat(100, 3), (80, 81, 79, 80), (80, 80, 60, 60), *flat(60, 2)], base=20_000.0)
    await w.start()
    await w.run({1: LONG, 3: LONG}, atr=8.0)
    first, second = w.bot.closed_trades
    assert (first.reason, second.reason) == (CloseReason.LIQUIDATION, CloseReason.LIQUIDATION)
    assert second.entry_time_ms == first.exit_time_ms == T0 + 4 * BAR
    clear = {r.time_ms: -r.income for r in w.engine.income_history(SYM) if r.income_type == "INSURANCE_CLEAR"}
    assert first.exit_fee == pytest.approx(clear[first.exit_time_ms], abs=1e-12)
    assert second.exit_fee == pytest.approx(clear[second.exit_time_ms], abs=1e-12)  # its own fee only
    assert sum(t.net_pnl for t in w.bot.closed_trades) == pytest.approx(w.income_total(), abs=1e-9)
    assert w.engine.balance() == pytest.approx(1000.0 + w.income_total())


# ====================================================================== reverse


async def test_reverse_model_passes_closes_and_reenters() -> None:
    f = ScriptedFilter(allow=True)
    w = World(REVERSE_BARS, entry_filter=f)
    await w.start()
    await w.run({1: LONG, 3: SHORT})
    assert [t.reason for t in w.bot.closed_trades] == [CloseReason.REVERSE]
    assert w.bot.state.side is SHORT
    assert w.engine.position(SYM).side is SHORT  # type: ignore[union-attr]
    assert len(f.calls) == 2 and f.calls[-1][SIDE_INDEX] == 0.0  # asked about SHORT
    orders = w.algo_orders()
    assert {o.side for o in orders} == {OrderSide.BUY} and len(orders) == 2
    assert w.risk.open_positions == {SYM: SHORT}


async def test_reverse_model_rejects_closes_only() -> None:
    f = ScriptedFilter(allow=True)
    w = World(REVERSE_BARS, entry_filter=f)
    await w.start()
    await w.run({1: LONG}, until=2)
    f.allow = False
    await w.run({3: SHORT})
    assert [t.reason for t in w.bot.closed_trades] == [CloseReason.REVERSE]
    assert w.bot.state.side is None and w.engine.position(SYM) is None
    assert w.algo_orders() == [] and w.risk.open_positions == {}


async def test_reverse_risk_refuses_closes_only() -> None:
    w = World(REVERSE_BARS, entry_filter=ScriptedFilter())
    await w.start()
    await w.run({1: LONG}, until=2)
    await w.risk.register("TRXUSDT", SHORT)  # two other SHORTs: MAX_SAME_DIRECTION = 2
    await w.risk.register("DOGEUSDT", SHORT)
    await w.run({3: SHORT})
    assert [t.reason for t in w.bot.closed_trades] == [CloseReason.REVERSE]
    assert w.bot.state.side is None and w.engine.position(SYM) is None
    assert w.risk.open_positions == {"TRXUSDT": SHORT, "DOGEUSDT": SHORT}
    assert len(w.bot._filter.calls) == 1  # type: ignore[attr-defined]  # refused before the model


async def test_daily_loss_gate_blocks_entry_but_reverse_still_closes() -> None:
    w = World([*flat(100, 3), (100, 100.5, 99.5, 99.5), *flat(99.5, 4)])
    await w.start()
    await w.run({1: LONG}, until=2)
    await w.risk.record_pnl(-60.0)  # 6 % of the 1000 base today
    await w.run({3: SHORT}, until=4)
    assert [t.reason for t in w.bot.closed_trades] == [CloseReason.REVERSE]
    assert w.engine.position(SYM) is None  # the exit ran, the re-entry did not
    await w.run({5: LONG})
    assert w.engine.position(SYM) is None  # a plain entry is blocked too
    assert [o.kind for o in w.journal.orders(SYM)] == ["ENTRY", "SL", "TP", "REVERSE"]


def journal_with_losers(n: int) -> Journal:
    """A journal holding ``n`` losing XRPUSDT trades that closed just before T0."""
    j = Journal()
    for k in range(n):
        j.record_trade(closed_trade(-1.0, entry_ms=T0 - 10 * BAR, exit_ms=T0 - BAR + k, qty=10.0))
    return j


async def test_kill_switch_blocks_entry() -> None:
    w = World(flat(100, 4), journal=journal_with_losers(8))
    await w.start()
    assert w.bot.kill_switch.tripped and w.bot.state.kill_switch
    await w.run({1: LONG, 2: SHORT})
    assert w.engine.position(SYM) is None and w.journal.orders(SYM) == []
    assert w.notifier.kinds() == ["kill_switch"]


async def test_kill_switch_trip_on_the_reverse_close_blocks_the_reentry() -> None:
    w = World(REVERSE_BARS, journal=journal_with_losers(7))
    await w.start()
    await w.run({1: LONG, 3: SHORT})  # the reverse closes at a loss: the 8th loser in a row
    assert [t.reason for t in w.bot.closed_trades] == [CloseReason.REVERSE]
    assert w.bot.kill_switch.tripped
    assert w.engine.position(SYM) is None
    assert "kill_switch" in w.notifier.kinds()


async def test_reverse_close_without_stream_events_is_confirmed_by_rest_and_booked_once() -> None:
    """Issue 7 §2.2/§2.5 (defects 2, 7): the reverse close's events do not arrive within 10 s.
    The old bot released the position with PnL 0 and hoped for late fills; now the exchange is
    asked: flat, so the close is booked at once from ``userTrades`` with its real PnL; when the
    held events do arrive, nothing is counted twice."""
    w = World(REVERSE_BARS, exchange_cls=HoldingExchange)
    ex: HoldingExchange = w.ex  # type: ignore[assignment]
    await w.start()
    await w.run({1: LONG}, until=2)
    ex.hold = True
    await w.step(SHORT)  # i = 3: close sent, no event arrives within 10 s
    bar_close = int(w.t[3]) + BAR
    (timeout,) = w.journal.events("close_timeout", SYM)
    assert timeout.time_ms - bar_close >= 10_000  # the simulated 10 s wait elapsed, for this bot
    assert w.clock.now_ms() == bar_close  # ... and for nobody else (defect 18)
    (trade,) = w.bot.closed_trades
    assert trade.reason is CloseReason.REVERSE and trade.side is LONG
    (close_row,) = w.journal.orders(SYM, "REVERSE")
    fills = [f for f in w.engine.fills(SYM) if f.order_id == close_row.order_id]
    assert trade.realized_pnl == pytest.approx(sum(f.realized_pnl for f in fills))
    assert trade.exit_fee == pytest.approx(sum(f.commission for f in fills))
    assert w.risk.daily_pnl == pytest.approx(trade.net_pnl)
    # The re-entry went ahead (the exchange is flat after the confirmed close).
    assert w.risk.open_positions == {SYM: SHORT}
    await ex.release()
    await ex.drain()
    assert w.bot.closed_trades == [trade]  # the held events changed nothing
    assert w.risk.daily_pnl == pytest.approx(trade.net_pnl)
    assert w.risk.open_positions == {SYM: SHORT}
    assert w.bot.state.side is SHORT


async def test_every_order_fill_trade_and_trip_is_journaled_before_the_bot_acts_on_it() -> None:
    """Issue 3 §5, "persist before acting": checked at the moment of each action.

    An order reaches the exchange only once its REQUESTED row exists; a position is registered
    only after its entry's result is journaled; the risk manager hears of a close only once the
    trade and every execution of it are journaled; the sibling is cancelled after that; the kill
    switch alert goes out only once the trip is persisted.
    """
    journal = journal_with_losers(7)  # the stop below is the 8th loser in a row: a trip
    seen: list[str] = []

    def requested(cid: str) -> bool:
        return any(o.client_id == cid and o.status == "REQUESTED" for o in journal.orders(SYM))

    class CheckedExchange(SimExchange):
        async def market_order(self, symbol: str, side: OrderSide, quantity: float, **kw: Any) -> OrderResult:
            assert requested(kw["client_order_id"])
            seen.append("market_order")
            return await super().market_order(symbol, side, quantity, **kw)

        async def place_conditional(
            self, symbol: str, order_type: OrderType, *a: Any, **kw: Any
        ) -> ConditionalOrder:
            assert requested(kw["client_algo_id"])
            seen.append(f"place {order_type.value}")
            return await super().place_conditional(symbol, order_type, *a, **kw)

        async def cancel_conditional(self, symbol: str, algo_id: int) -> None:
            assert len(journal.closed_trades(symbol)) == 8  # the trade is in before the cleanup
            seen.append("cancel sibling")
            await super().cancel_conditional(symbol, algo_id)

    class CheckedRisk(RiskManager):
        async def register(self, symbol: str, side: Side) -> None:
            entry = journal.last_order(symbol, ("ENTRY",))
            assert entry is not None and entry.status == "FILLED" and entry.order_id
            seen.append("register")
            await super().register(symbol, side)

        async def close(self, symbol: str, pnl: float, *, time_ms: int | None = None) -> None:
            trade = journal.closed_trades(symbol)[-1]
            assert trade.reason is CloseReason.SL and trade.net_pnl == pnl
            assert journal.fill_count(symbol) == len(w.engine.fills(symbol))  # every execution
            seen.append("risk close")
            await super().close(symbol, pnl, time_ms=time_ms)

    class CheckedNotifier(RecordingNotifier):
        async def notify(self, kind: str, text: str) -> None:
            if kind == "kill_switch":
                state = journal.kill_switch_state(SYM)
                assert state is not None and state.tripped and journal.events("kill_switch.trip", SYM)
            seen.append(f"notify {kind}")
            await super().notify(kind, text)

    w = World(
        [*flat(100, 3), SL_BAR, *flat(97, 2)],
        settings=replace(EXACT, max_fill_qty_per_execution=20.0),  # three executions per order
        exchange_cls=CheckedExchange,
        journal=journal,
        risk_cls=CheckedRisk,
        notifier=CheckedNotifier(),
    )
    await w.start()
    await w.run({1: LONG})
    assert seen == [
        "market_order",
        "register",
        "notify entry",
        "place STOP_MARKET",
        "place TAKE_PROFIT_MARKET",
        "risk close",
        "cancel sibling",
        "notify close",
        "notify kill_switch",
    ]
    assert w.bot.kill_switch.tripped and w.bot.errors == 0


# ====================================================================== protection failures


async def test_sl_placement_fails_three_times_emergency_close_and_alert() -> None:
    w = World(flat(100, 6), exchange_cls=FailingProtection)
    ex: FailingProtection = w.ex  # type: ignore[assignment]
    await w.start()
    await w.step()
    await w.step(LONG)
    assert ex.attempts == 3
    bar_close = int(w.t[1]) + BAR
    sl_rows = [o for o in w.journal.orders(SYM) if o.kind == "SL"]
    # Two 1 s pauses between the three attempts, on this bot's time only (defect 18).
    assert [o.time_ms - bar_close for o in sl_rows] == [0, 1_000, 2_000]
    assert w.clock.now_ms() == bar_close
    assert [o.status for o in sl_rows] == ["ERROR"] * 3
    assert w.engine.position(SYM) is None  # never left without its stop
    assert [t.reason for t in w.bot.closed_trades] == [CloseReason.EMERGENCY]
    assert w.risk.open_positions == {}
    assert w.algo_orders() == []  # the TP that did get placed was cancelled
    assert "emergency" in w.notifier.kinds()
    assert "emergency close sent" in w.notifier.texts("emergency")[0]
    assert w.journal.events("emergency_close", SYM)


async def test_emergency_close_failure_asks_for_manual_action() -> None:
    w = World(flat(100, 6), exchange_cls=FailingProtection)
    ex: FailingProtection = w.ex  # type: ignore[assignment]
    ex.fail_close = True
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.engine.position(SYM) is not None
    assert "MANUAL ACTION NEEDED" in w.notifier.texts("emergency")[0]
    assert w.journal.events("manual_action_needed", SYM)


async def test_stop_that_would_trigger_at_once_is_an_emergency() -> None:
    """ORDER_WOULD_IMMEDIATELY_TRIGGER is retried like any failure, then the position is closed."""

    class Immediate(FailingProtection):
        async def place_conditional(
            self, symbol: str, order_type: OrderType, *a: Any, **kw: Any
        ) -> ConditionalOrder:
            if order_type is OrderType.STOP_MARKET:
                raise ExchangeError(ORDER_WOULD_IMMEDIATELY_TRIGGER, "Order would immediately trigger.")
            return await SimExchange.place_conditional(self, symbol, order_type, *a, **kw)

    w = World(flat(100, 4), exchange_cls=Immediate)
    await w.start()
    await w.run({1: LONG})
    assert [t.reason for t in w.bot.closed_trades] == [CloseReason.EMERGENCY]


async def test_protective_order_lost_is_replaced() -> None:
    w = World(flat(100, 5))
    await w.start()
    await w.run({1: LONG}, until=2)
    old_sl = w.bot.state.sl_id
    w.engine.cancel_algo(SYM, old_sl)  # someone cancels the stop by hand
    w.ex.publish_pending()
    await w.ex.drain()
    await w.bot.wait_background()
    await w.ex.drain()
    st = w.bot.state
    assert st.sl_id and st.sl_id != old_sl and st.sl_price == 96.0
    assert {o.algo_id for o in w.algo_orders()} == {st.sl_id, st.tp_id}
    assert w.journal.events("protection_lost", SYM)


# ====================================================================== idempotency


async def test_duplicate_events_record_one_trade() -> None:
    w = World([*flat(100, 3), SL_BAR, *flat(97, 2)], exchange_cls=DoubleDelivery)
    await w.start()
    await w.run({1: LONG})
    assert len(w.bot.closed_trades) == 1 and len(w.journal.closed_trades()) == 1
    assert w.risk.daily_pnl == pytest.approx(w.bot.closed_trades[0].net_pnl)
    assert w.journal.fill_count(SYM) == len(w.engine.fills(SYM))  # each execution stored once
    await w.bot.reconcile()  # a reconciliation afterwards finds nothing to do
    assert len(w.journal.closed_trades()) == 1


async def test_manual_partial_reduction_then_stop_is_one_trade() -> None:
    w = World(flat(100, 3) + flat(100, 1) + [(100, 100.5, 95, 97)] + flat(97, 1))
    await w.start()
    await w.run({1: LONG}, until=2)
    w.engine.market_order(SYM, OrderSide.SELL, 20.0, reduce_only=True)  # by hand, 20 of 50
    w.ex.publish_pending()
    await w.ex.drain()
    assert w.bot.state.qty == pytest.approx(30.0) and w.bot.closed_trades == []
    await w.run({})
    (trade,) = w.bot.closed_trades
    assert trade.quantity == pytest.approx(50.0)
    assert trade.net_pnl == pytest.approx(w.income_total())


# ====================================================================== recovery


async def test_restart_mid_position_adopts_registers_and_replaces_the_stop() -> None:
    w = World([*flat(100, 4), (100, 100.5, 93, 95), *flat(95, 1)])
    await w.start()
    await w.run({1: LONG}, until=2)
    old = w.bot.state
    w.engine.cancel_algo(SYM, old.sl_id)  # lost while the process was down
    w.engine.pop_events()
    # A new process: new adapter connection, new risk manager, same journal and account.
    w2 = World(w.bars.tolist(), engine=w.engine, journal=w.journal)
    w2.i = w.i
    w2.clock.set(w.clock.now_ms())
    await w2.start(ctx_at(w.i, 100.0, None, atr=3.0))
    st = w2.bot.state
    assert (st.side, st.entry_price, st.qty) == (LONG, old.entry_price, old.qty)
    assert w2.risk.open_positions == {SYM: LONG}
    assert st.tp_id == old.tp_id and st.tp_price == old.tp_price  # restored, not duplicated
    assert st.sl_id and st.sl_id != old.sl_id and st.sl_price == 94.0  # entry 100 − 2·ATR(3)
    assert {o.algo_id for o in w.algo_orders()} == {st.sl_id, st.tp_id}
    assert "restarted with an open LONG" in w2.notifier.texts("info")[0]
    assert w2.journal.events("position_adopted", SYM)
    await w2.run({})  # the stop fires at 94
    (trade,) = w2.bot.closed_trades
    assert trade.reason is CloseReason.SL and trade.exit_price == pytest.approx(94.0)
    assert trade.entry_fee == pytest.approx(2.5)  # entry commission recovered from the journal
    assert trade.net_pnl == pytest.approx(w.income_total())


async def test_restart_without_atr_uses_the_journaled_stop() -> None:
    w = World(flat(100, 5))
    await w.start()
    await w.run({1: LONG}, until=2)
    w.engine.cancel_algo(SYM, w.bot.state.sl_id)
    w.engine.pop_events()
    w2 = World(w.bars.tolist(), engine=w.engine, journal=w.journal)
    w2.clock.set(w.clock.now_ms())
    await w2.start(None)
    assert w2.bot.state.sl_price == 96.0  # the trigger journaled at entry


# A day on which one stop-loss costs 20 % of the base (limit 5 %), then 100 quiet bars: bar 95
# closes at 00:00 UTC of the next day, the first close after midnight.
LOSING_DAY = [*flat(100, 3), SL_BAR, *flat(97, 100)]


async def restart(w: World, journal_path: Path, config: AppConfig | None = None) -> World:
    """The process dies after bar ``w.i`` and a new one starts on the same account and journal
    file: new adapter connection, risk manager (daily PnL restored), bot and kill switch."""
    await w.ex.aclose()
    w.journal.close()
    w2 = World(
        w.bars.tolist(),
        engine=w.engine,
        journal=Journal(journal_path),
        base=w.engine.balance(),  # the new process reads its base balance once, at start-up
        config=config,
    )
    w2.i = w.i
    w2.clock.set(w.clock.now_ms())
    w2.risk.restore_from_journal(w2.journal)
    await w2.start()
    return w2


async def test_restart_on_a_losing_day_stays_blocked_until_midnight(tmp_path: Path) -> None:
    """Issue 3 §5: the day's PnL is rebuilt from the journal after a restart, so a restart does
    not reopen trading on a day that hit the loss limit; 00:00 UTC on the injected clock does."""
    path = tmp_path / "journal.sqlite"
    w = World(LOSING_DAY, journal=Journal(path))
    await w.start()
    await w.run({1: LONG}, until=5)
    (loss,) = w.bot.closed_trades
    assert loss.net_pnl == pytest.approx(-204.9) and not await w.risk.trading_allowed()

    w2 = await restart(w, path)
    assert w2.risk.daily_pnl == pytest.approx(loss.net_pnl)
    assert w2.journal.events("risk.daily_pnl_restored")
    await w2.run({6: LONG, 50: SHORT, 94: LONG}, until=94)  # bar 94 closes at 23:45 UTC
    assert w2.engine.position(SYM) is None
    assert len(w2.journal.orders(SYM, "ENTRY")) == 1  # only the first process's entry
    assert w2.journal.events("risk.daily_loss_limit")
    await w2.run({96: LONG}, until=96)  # bar 96 closes at 00:15 UTC of the next day
    assert w2.bot.state.side is LONG and w2.engine.position(SYM) is not None
    assert w2.risk.daily_pnl == 0.0 and w2.journal.events("risk.daily_reset")


async def test_restart_on_the_next_day_starts_from_zero(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    w = World(LOSING_DAY, journal=Journal(path))
    await w.start()
    await w.run({1: LONG}, until=96)
    w2 = await restart(w, path)
    assert w2.risk.daily_pnl == 0.0 and await w2.risk.trading_allowed()
    await w2.run({97: LONG}, until=97)
    assert w2.bot.state.side is LONG


async def test_kill_switch_trip_survives_a_restart_and_the_reset_flag_clears_it(tmp_path: Path) -> None:
    """SPEC §13 row 27 end to end: the 8th loser in a row trips the switch (journaled before
    the alert); a restart keeps it even on a new day; RESET_KILL_SWITCH_<SYMBOL> + restart clears it."""
    path = tmp_path / "journal.sqlite"
    seed = Journal(path)
    for k in range(7):  # seven losers of the previous day
        seed.record_trade(closed_trade(-1.0, entry_ms=T0 - 10 * BAR, exit_ms=T0 - BAR + k, qty=10.0))
    seed.close()
    w = World(LOSING_DAY, journal=Journal(path))
    await w.start()
    assert not w.bot.kill_switch.tripped
    await w.run({1: LONG}, until=5)
    assert w.bot.kill_switch.tripped and "kill_switch" in w.notifier.kinds()
    state = w.journal.kill_switch_state(SYM)
    assert state is not None and state.tripped

    w2 = await restart(w, path)
    await w2.run({96: LONG}, until=96)  # a new day: the loss limit is lifted, the switch is not
    assert await w2.risk.trading_allowed()
    assert w2.bot.state.kill_switch and w2.engine.position(SYM) is None
    assert w2.notifier.kinds() == ["kill_switch"]  # said again at boot

    w3 = await restart(w2, path, AppConfig(symbols=(SYM,), reset_kill_switch=frozenset({SYM})))
    assert not w3.bot.kill_switch.tripped and w3.journal.events("kill_switch.reset", SYM)
    await w3.run({97: LONG}, until=97)
    assert w3.bot.state.side is LONG


async def test_flat_start_cancels_orphans() -> None:
    w = World(flat(100, 3))
    w.engine.process_bar(SYM, 0)
    w.engine.place_algo(SYM, OrderType.STOP_MARKET, OrderSide.SELL, 1.0, 90.0)
    w.engine.place_algo(SYM, OrderType.TAKE_PROFIT_MARKET, OrderSide.SELL, 1.0, 110.0)
    w.engine.pop_events()
    await w.risk.register(SYM, LONG)  # a stale registration as well
    await w.start()
    assert w.algo_orders() == []
    assert w.journal.events("orphans_cancelled", SYM)
    assert w.risk.open_positions == {}


# ====================================================================== scripted port


def test_fake_port_satisfies_the_protocol() -> None:
    assert isinstance(FakePort(), ExchangePort)


async def test_sync_reconciliation_sums_all_income_rows_of_the_symbol_only() -> None:
    clock = SimClock(T0 + 10 * BAR)
    entry_t = clock.now_ms()
    port = protected_long_port()
    bot, risk, journal, _notifier = fake_bot(port, clock)
    await bot.start()
    assert bot.state.side is LONG and "place_conditional" not in port.calls  # both found
    assert (bot.state.sl_id, bot.state.tp_id) == (11, 12)
    # The position closed while the stream was dead: the exchange is flat.
    clock.set(entry_t + 4 * BAR)
    port.pos = None
    port.incomes = [
        Income(SYM, "REALIZED_PNL", 50.0, entry_t - 1, "1"),  # before the entry: a previous trade
        Income(SYM, "COMMISSION", -2.5, entry_t + 1, "2"),
        Income(SYM, "REALIZED_PNL", -120.0, entry_t + 3 * BAR, "3"),  # two partial executions
        Income(SYM, "COMMISSION", -1.44, entry_t + 3 * BAR, "3"),
        Income(SYM, "REALIZED_PNL", -80.0, entry_t + 3 * BAR, "4"),
        Income(SYM, "COMMISSION", -0.96, entry_t + 3 * BAR, "4"),
        Income(SYM, "FUNDING_FEE", -0.5, entry_t + 2 * BAR, "f"),
        Income("TRXUSDT", "REALIZED_PNL", 999.0, entry_t + 3 * BAR, "5"),  # another symbol
        Income("TRXUSDT", "COMMISSION", -9.0, entry_t + 3 * BAR, "5"),
    ]
    await bot.reconcile()
    (trade,) = bot.closed_trades
    assert trade.reason is CloseReason.SYNC
    assert trade.realized_pnl == pytest.approx(-200.0)
    assert trade.fees == pytest.approx(2.5 + 1.44 + 0.96)
    assert trade.funding == pytest.approx(-0.5)
    assert trade.net_pnl == pytest.approx(-200.0 - 4.9 - 0.5)
    assert trade.exit_price == pytest.approx(100.0 - 200.0 / 50.0)  # entry + rp/qty for a LONG
    assert bot.state.side is None
    assert risk.open_positions == {} and risk.daily_pnl == pytest.approx(trade.net_pnl)
    assert "cancel_all_conditional" in port.calls  # orphans (the SL/TP pair) cancelled
    assert journal.events("sync_close", SYM)
    await bot.reconcile()  # idempotent
    assert len(journal.closed_trades()) == 1


async def test_hold_candle_touches_nothing() -> None:
    clock = SimClock(T0)
    port = FakePort()
    f = ScriptedFilter()
    bot, _risk, journal, _ = fake_bot(port, clock, f)
    await bot.start()
    port.calls.clear()
    ctx = ctx_at(0, 100.0, None)
    n = 20_000
    t = time.perf_counter()
    for _ in range(n):
        await bot.on_candle(ctx)
    per_call = (time.perf_counter() - t) / n
    assert port.calls == [] and f.calls == [] and f.reloads == n
    assert journal.orders() == [] and journal.events(symbol=SYM) == []
    assert per_call < 50e-6  # measured ~1 µs; generous for slow CI


async def test_candle_exception_is_caught_and_the_next_candle_works() -> None:
    clock = SimClock(T0)
    port = FakePort()
    bot, *_ = fake_bot(port, clock)
    await bot.start()
    port.fail_position = True
    await bot.on_candle(ctx_at(0, 100.0, LONG))  # must not raise
    assert bot.errors == 1
    port.fail_position = False
    await bot.on_candle(ctx_at(1, 100.0, LONG))
    assert bot.errors == 1 and "market_order" in port.calls


async def test_stale_risk_registration_released_when_flat() -> None:
    clock = SimClock(T0)
    port = FakePort()
    bot, risk, *_ = fake_bot(port, clock)
    await bot.start()
    await risk.register(SYM, SHORT)  # e.g. left by a bot that died mid-entry
    await bot.on_candle(ctx_at(0, 100.0, LONG))
    assert risk.open_positions == {SYM: LONG}  # released with PnL 0, then the new entry
    assert risk.daily_pnl == 0.0


def otu(
    order_id: int,
    trade_id: int,
    *,
    ap: float,
    qty: float = 50.0,
    rp: float = 0.0,
    fee: float = 0.0,
    reduce_only: bool = True,
    ot: OrderType = OrderType.MARKET,
) -> OrderTradeUpdate:
    """A one-execution FILLED report of a (by default reduce-only) SELL of 50 at ``ap``."""
    return order_update(order_id, trade_id, qty=qty, price=ap, rp=rp, fee=fee, reduce_only=reduce_only, ot=ot)


async def adopted_fake_bot() -> tuple[SymbolBot, FakePort, RiskManager, Journal]:
    clock = SimClock(T0)
    port = protected_long_port()
    bot, risk, journal, _ = fake_bot(port, clock)
    await bot.start()
    return bot, port, risk, journal


async def test_triggered_market_fill_is_classified_by_the_nearest_stored_price() -> None:
    """Live reports a triggered TP as o=MARKET, ot=MARKET with a new order id and no ALGO_UPDATE
    link may be available: the nearest stored price (104 vs 96) decides (SPEC §13 row 3)."""
    bot, port, risk, _ = await adopted_fake_bot()
    port.pos = None
    await bot.on_event(otu(555, 1, ap=103.9, rp=195.0, fee=2.6))
    (trade,) = bot.closed_trades
    assert trade.reason is CloseReason.TP
    assert "cancel_conditional" in port.calls  # the SL sibling, by id
    assert risk.open_positions == {}


async def test_same_close_event_twice_records_one_trade() -> None:
    bot, _port, risk, journal = await adopted_fake_bot()
    ev = otu(555, 1, ap=96.0, rp=-200.0, fee=2.4)
    await bot.on_event(ev)
    await bot.on_event(ev)
    await bot.on_event(otu(556, 2, ap=96.0, rp=-200.0, fee=2.4))  # another close while flat
    assert len(bot.closed_trades) == 1 and len(journal.closed_trades()) == 1
    assert risk.daily_pnl == pytest.approx(-202.4)


async def test_close_without_average_price_is_left_to_reconciliation() -> None:
    bot, port, _risk, _ = await adopted_fake_bot()
    await bot.on_event(otu(555, 1, ap=0.0, rp=-200.0, fee=2.4))
    assert bot.closed_trades == [] and bot.state.side is LONG
    port.pos = None
    port.incomes = [
        Income(SYM, "REALIZED_PNL", -200.0, T0 + 1, "1"),
        Income(SYM, "COMMISSION", -2.4, T0 + 1, "1"),
    ]
    await bot.reconcile()
    (trade,) = bot.closed_trades
    assert trade.reason is CloseReason.SYNC and trade.net_pnl == pytest.approx(-202.4)


async def test_entry_with_rp_is_not_taken_for_a_close() -> None:
    """No "rp ≠ 0" rule: an execution on the position's entry side (BUY for a LONG) never
    reduces it, whatever its realised PnL."""
    bot, _port, *_ = await adopted_fake_bot()
    await bot.on_event(order_update(557, 3, qty=50.0, price=100.0, rp=0.02, side=OrderSide.BUY))
    assert bot.closed_trades == [] and bot.state.side is LONG and bot.state.qty == 50.0


async def test_close_position_end_of_data() -> None:
    w = World([*flat(100, 4), (101, 101, 101, 101)])
    await w.start()
    await w.run({1: LONG})
    assert await w.bot.close_position(CloseReason.END_OF_DATA)
    await w.ex.drain()
    (trade,) = w.bot.closed_trades
    assert trade.reason is CloseReason.END_OF_DATA and trade.exit_price == pytest.approx(101.0)
    assert w.engine.position(SYM) is None and w.algo_orders() == [] and w.risk.open_positions == {}
    assert not await w.bot.close_position(CloseReason.END_OF_DATA)  # flat: nothing to do
    await w.bot.stop()


async def test_adoption_ignores_the_entry_of_an_already_closed_trade() -> None:
    """The last journaled ENTRY belongs to a finished round trip: its time must not become the
    adopted position's entry time (it would pull older funding/income into the new trade)."""
    clock = SimClock(T0 + 100 * BAR)
    port = FakePort(pos=Position(SYM, LONG, 50.0, 100.0))
    bot, _, journal, _ = fake_bot(port, clock)
    rid = journal.record_order_request(
        time_ms=T0, symbol=SYM, kind="ENTRY", order_type="MARKET", side="BUY", qty=50.0
    )
    journal.record_order_result(rid, time_ms=T0, status="FILLED", order_id=5)
    journal.record_trade(
        ClosedTrade(SYM, LONG, T0, T0 + BAR, 100.0, 101.0, 50.0, 50.0, 2.5, 2.5, 0.0, CloseReason.TP)
    )
    await bot.start(ctx_at(100, 100.0, None))  # the preloaded candles' ATR
    assert bot.state.entry_time_ms == clock.now_ms()
    # With no later trade the same journal entry is this position's own: its time is used.
    clock2 = SimClock(T0 + 100 * BAR)
    bot2, *_ = fake_bot(FakePort(pos=Position(SYM, LONG, 50.0, 100.0)), clock2)
    j2 = bot2._journal
    rid = j2.record_order_request(
        time_ms=T0, symbol=SYM, kind="ENTRY", order_type="MARKET", side="BUY", qty=50
    )
    j2.record_order_result(rid, time_ms=T0, status="FILLED", order_id=5)
    await bot2.start()
    assert bot2.state.entry_time_ms == T0


async def test_reverse_close_timeout_without_reentry_leaves_a_clean_flat_state() -> None:
    f = ScriptedFilter(allow=True)
    w = World(REVERSE_BARS, exchange_cls=HoldingExchange, entry_filter=f)
    ex: HoldingExchange = w.ex  # type: ignore[assignment]
    await w.start()
    await w.run({1: LONG}, until=2)
    ex.hold, f.allow = True, False
    await w.step(SHORT)
    assert w.bot.state.side is None and w.risk.open_positions == {}  # released, nothing stale
    assert w.engine.position(SYM) is None
    await ex.release()
    await ex.drain()
    (late,) = w.bot.closed_trades
    assert late.reason is CloseReason.REVERSE
    assert w.risk.daily_pnl == pytest.approx(late.net_pnl)
    assert w.algo_orders() == []


async def test_estimated_pnl_spec_row_and_idle_when_flat() -> None:
    clock = SimClock(T0)
    port = FakePort(pos=Position(SYM, LONG, 100.0, 0.50))
    bot, *_ = fake_bot(port, clock)
    assert bot.estimated_pnl(0.51) is None  # flat: the monitor idles
    await bot.start()
    assert bot.estimated_pnl(0.51) == pytest.approx(1.0)  # LONG 0.50, qty 100, price 0.51
    assert bot.estimated_pnl(0.0) is None
