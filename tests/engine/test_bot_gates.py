"""Issue 7 defects 13, 16, 17 and 18: the entry gate, the day a PnL belongs to, a start-up that
survives a transient error, and one bot's waiting that never moves another bot's time.

Each test states what the code at commit 93537bc did, so that it is clear why it failed there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from perpbot.config import AppConfig
from perpbot.domain.types import CloseReason, ConditionalOrder, OrderType, Position, SymbolFilters
from perpbot.engine.bot import SymbolBot
from perpbot.engine.clock import SimClock
from perpbot.engine.journal import Journal
from perpbot.engine.notifier import RecordingNotifier
from perpbot.engine.risk import DAY_MS, RiskManager, utc_day
from perpbot.exchange.errors import ExchangeError, ExchangeUnavailable
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.settings import SimSettings
from perpbot.ml.decision import PassThroughFilter

from .factories import BAR, SYM, T0, ctx_at, order_update
from .harness import LONG, FakePort, fake_bot, protected_long_port

TRX = "TRXUSDT"


# ====================================================================== defect 13


class LossDuringRead(FakePort):
    """While this bot reads its position, another bot books a loss that hits the daily limit
    (the two bots run as tasks of one loop: any await lets the other one run)."""

    risk: RiskManager | None = None

    async def position(self, symbol: str) -> Position | None:
        pos = await super().position(symbol)
        if self.risk is not None:
            risk, self.risk = self.risk, None  # once
            await risk.close(TRX, -0.06 * risk.base_balance)
        return pos


async def test_daily_loss_gate_is_checked_under_the_entry_lock() -> None:
    """Old code: ``trading_allowed()`` ran before the position read and the entry lock; under the
    lock only the position limits were checked, so this entry went out on a day that had just
    hit the limit. Now the gate is read again together with the limits (``can_enter``)."""
    clock = SimClock(T0)
    port = LossDuringRead()
    bot, risk, journal, _ = fake_bot(port, clock)
    await bot.start()
    port.risk = risk  # armed after the start-up read
    assert await risk.trading_allowed()
    await bot.on_candle(ctx_at(0, 100.0, LONG))
    assert "market_order" not in port.calls
    assert not await risk.trading_allowed()
    assert journal.orders(SYM, "ENTRY") == []


async def test_can_enter_refuses_on_the_daily_limit_before_the_position_rules() -> None:
    clock = SimClock(T0)
    risk = RiskManager(AppConfig(symbols=(SYM,)), clock)
    risk.set_base_balance(1000.0)
    assert (await risk.can_enter(SYM, LONG)).allowed
    await risk.close(TRX, -50.0)
    decision = await risk.can_enter(SYM, LONG)
    assert not decision and decision.reason == "daily_loss_limit"


# ====================================================================== defect 16


async def test_a_loss_filled_before_midnight_is_yesterdays_in_risk_and_journal() -> None:
    """A stop fills at 23:59:59.9; its event is handled 5 s after midnight. Old code added the
    loss to the *new* day in the risk manager while the journal filed it under the old day."""
    midnight = T0 + DAY_MS
    clock = SimClock(midnight - BAR)
    port = protected_long_port()
    bot, risk, journal, _ = fake_bot(port, clock)
    await bot.start()
    clock.set(midnight + 5_000)
    port.pos = None
    fill_t = midnight - 100
    await bot.on_event(
        order_update(555, 1, qty=50.0, price=96.0, rp=-200.0, fee=2.4, reduce_only=True, t=fill_t)
    )
    (trade,) = bot.closed_trades
    assert trade.exit_time_ms == fill_t
    assert risk.daily_pnl == 0.0 and risk.day == utc_day(midnight)
    assert journal.daily_pnl(utc_day(fill_t)) == pytest.approx(trade.net_pnl)
    assert journal.daily_pnl(utc_day(midnight)) == 0.0
    assert journal.events("risk.pnl_previous_day")


async def test_a_pnl_of_today_counts_today() -> None:
    clock = SimClock(T0 + BAR)
    risk = RiskManager(AppConfig(symbols=(SYM,)), clock)
    risk.set_base_balance(1000.0)
    await risk.close(SYM, -10.0, time_ms=T0 + 1)
    await risk.record_pnl(-5.0, time_ms=T0 + 2)
    assert risk.daily_pnl == pytest.approx(-15.0)


# ====================================================================== defect 17


class FlakyStart(FakePort):
    """The first ``failures`` position reads fail with ``error``."""

    failures = 2
    error: ExchangeError = ExchangeUnavailable("read timed out")

    async def position(self, symbol: str) -> Position | None:
        if self.failures > 0:
            self.failures -= 1
            self.calls.append("position")
            raise self.error
        return await super().position(symbol)


async def test_start_retries_transient_errors_with_back_off() -> None:
    """Old code: one timeout on the first position read made ``start()`` raise."""
    clock = SimClock(T0)
    port = FlakyStart(pos=protected_long_port().pos, algo=protected_long_port().algo)
    bot, risk, journal, _ = fake_bot(port, clock)
    await bot.start()
    assert bot.state.side is LONG and risk.open_positions == {SYM: LONG}
    retries = journal.events("start_retry", SYM)
    assert len(retries) == 2
    assert [e.time_ms - T0 for e in retries] == [0, 1_000]  # 1 s, then 2 s of back-off
    assert port.calls.count("position") == 3


async def test_start_does_not_retry_a_rejection() -> None:
    clock = SimClock(T0)
    port = FlakyStart()
    port.error = ExchangeError(-2015, "Invalid API-key, IP, or permissions for action.")
    bot, *_ = fake_bot(port, clock)
    with pytest.raises(ExchangeError):
        await bot.start()
    assert port.calls.count("position") == 1


async def test_start_gives_up_after_its_attempts() -> None:
    clock = SimClock(T0)
    port = FlakyStart()
    port.failures = 100
    bot, _, journal, _ = fake_bot(port, clock)
    with pytest.raises(ExchangeUnavailable):
        await bot.start()
    assert port.calls.count("position") == 5 and len(journal.events("start_retry", SYM)) == 4


# ====================================================================== defect 18


class SlowStopsOnXrp(SimExchange):
    """XRP's first two stop placements fail with "overloaded" (-1008): its bot retries twice,
    sleeping 1 s before each retry."""

    failures = 2

    async def place_conditional(
        self, symbol: str, order_type: OrderType, *a: Any, **kw: Any
    ) -> ConditionalOrder:
        if symbol == SYM and order_type is OrderType.STOP_MARKET and self.failures > 0:
            self.failures -= 1
            raise ExchangeError(-1008, "Server is currently overloaded with other requests.")
        return await super().place_conditional(symbol, order_type, *a, **kw)


async def test_one_bots_retry_sleeps_do_not_delay_the_next_symbols_entry() -> None:
    """Both symbols go LONG on the candle closing at 08:00 UTC, a funding settlement. XRP's
    bot retries its stop twice (2 × 1 s). Old code slept on the shared simulated clock, so
    TRX's entry was stamped 08:00:02: the funding paid at 08:00 was charged to the wallet but
    left out of TRX's trade (the trade window starts at the entry). Now TRX's entry is stamped
    08:00:00 and its trade carries the funding the wallet paid."""
    n = 36
    settle = 32  # bar 32 opens at 08:00 UTC
    t = T0 + np.arange(n, dtype=np.int64) * BAR
    px = np.full(n, 100.0)
    funding = np.zeros(n)
    funding[settle] = 0.001
    filters = {s: SymbolFilters(s, 0.01, 0.001, 0.001, 5.0) for s in (SYM, TRX)}
    engine = MatchingEngine(SimSettings(slippage_bps=0.0), filters)
    for s in (SYM, TRX):
        engine.add_bars(s, t, px, px, px, px, funding)
    ex = SlowStopsOnXrp(engine)
    clock = SimClock(T0)
    journal = Journal()
    cfg = AppConfig(symbols=(SYM, TRX))
    risk = RiskManager(cfg, clock, journal=journal)
    risk.set_base_balance(engine.balance())
    bots = {
        s: SymbolBot(s, cfg, ex, risk, PassThroughFilter(), journal, clock, RecordingNotifier())
        for s in (SYM, TRX)
    }
    await ex.start()
    for bot in bots.values():
        await bot.start(None)
    for i in range(n - 1):
        clock.set(int(t[i]) + BAR)
        for s in (SYM, TRX):
            ex.process_bar(s, i)
        await ex.drain()
        for s in (SYM, TRX):
            await bots[s].on_candle(ctx_at(i, 100.0, LONG if i == settle - 1 else None, symbol=s))
        await ex.drain()
    for bot in bots.values():
        assert await bot.close_position(CloseReason.END_OF_DATA)
    await ex.drain()
    await ex.aclose()
    eight = int(t[settle])
    xrp_sl = [o.time_ms - eight for o in journal.orders(SYM, "SL")]
    assert xrp_sl == [0, 1_000, 2_000]  # XRP's own time did pass
    (trx_entry,) = journal.orders(TRX, "ENTRY")
    assert trx_entry.time_ms == eight
    (trade,) = bots[TRX].closed_trades
    assert trade.entry_time_ms == eight
    paid = [r.income for r in engine.income_history(TRX) if r.income_type == "FUNDING_FEE"]
    assert len(paid) == 1 and paid[0] < 0
    assert trade.funding == pytest.approx(paid[0])


# ====================================================================== decision latency


async def test_a_position_read_handed_over_by_the_runtime_is_the_one_the_bot_decides_on() -> None:
    """The live runtime starts the SPEC §8.3 step 7 read when the candle comes in and hands it
    over; the bot awaits it at step 7 instead of asking again, and decides on what it says."""
    clock = SimClock(T0)
    port = FakePort()  # flat
    bot, _risk, journal, _ = fake_bot(port, clock)
    await bot.start()
    port.calls.clear()

    async def flat() -> Position | None:
        return None

    await bot.on_candle(ctx_at(0, 100.0, LONG), position=flat())
    assert "market_order" in port.calls and journal.orders(SYM, "ENTRY")  # flat → entered
    assert "position" not in port.calls[: port.calls.index("market_order")]  # no second read
    port.calls.clear()
    await bot.on_candle(ctx_at(1, 100.0, LONG))  # without a handed-over read: the bot asks
    assert port.calls[:1] == ["position"]

    port2 = protected_long_port()
    bot2, _risk2, journal2, _ = fake_bot(port2, SimClock(T0))
    await bot2.start()
    port2.calls.clear()

    async def failing() -> Position | None:
        raise ExchangeUnavailable("timeout")

    await bot2.on_candle(ctx_at(0, 100.0, LONG.opposite), position=failing())
    assert bot2.errors == 1 and "market_order" not in port2.calls  # the read's failure, as before
    assert journal2.orders(SYM, "ENTRY") == []
