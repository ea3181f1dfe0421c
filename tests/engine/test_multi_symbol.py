"""The risk rules across symbols, end to end: several real ``SymbolBot``s share one
``RiskManager`` and one simulated account, candle by candle as the backtester drives them
(SPEC §9, §14 Risk rows; issue 3 "Risk rules across symbols").

The unit tests of ``RiskManager`` show the rules on the registry; these show that the bots ask it
at the right moments: a refused entry sends no order, an exit is never refused, and the midnight
reset follows the injected clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from perpbot.config import AppConfig
from perpbot.domain.types import CloseReason, Side, SymbolFilters
from perpbot.engine.bot import SymbolBot
from perpbot.engine.clock import SimClock
from perpbot.engine.journal import Journal
from perpbot.engine.notifier import RecordingNotifier
from perpbot.engine.risk import RiskManager
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.settings import SimSettings
from perpbot.ml.decision import PassThroughFilter

from .factories import BAR, OHLC, SL_BAR, T0, ctx_at, flat

LONG, SHORT = Side.LONG, Side.SHORT
XRP, TRX, DOGE, ADA = "XRPUSDT", "TRXUSDT", "DOGEUSDT", "ADAUSDT"


class Market:
    """One simulated account with one bot per symbol and the one shared risk manager."""

    def __init__(
        self, bars: Mapping[str, Sequence[OHLC]], exchange_cls: type[SimExchange] = SimExchange
    ) -> None:
        self.symbols = tuple(bars)
        filters = {s: SymbolFilters(s, 0.01, 0.001, 0.001, 5.0) for s in self.symbols}
        self.engine = MatchingEngine(SimSettings(slippage_bps=0.0), filters)
        self.closes: dict[str, list[float]] = {}
        for s, rows in bars.items():
            a = np.asarray(rows, dtype=np.float64)
            t = T0 + np.arange(len(a), dtype=np.int64) * BAR
            self.engine.add_bars(s, t, a[:, 0], a[:, 1], a[:, 2], a[:, 3])
            self.closes[s] = a[:, 3].tolist()
        self.ex = exchange_cls(self.engine)
        self.clock = SimClock(T0)
        self.journal = Journal()
        cfg = AppConfig(symbols=self.symbols)
        self.risk = RiskManager(cfg, self.clock, journal=self.journal)
        self.risk.set_base_balance(self.engine.balance())
        self.bots = {
            s: SymbolBot(
                s, cfg, self.ex, self.risk, PassThroughFilter(), self.journal, self.clock, RecordingNotifier()
            )
            for s in self.symbols
        }
        self.i = -1

    async def start(self) -> None:
        await self.ex.start()
        for bot in self.bots.values():
            await bot.start(None)
        await self.ex.drain()

    async def step(self, signals: Mapping[str, Side] | None = None) -> None:
        """One open time: every symbol's candle happens, then every bot sees its close."""
        self.i += 1
        i = self.i
        self.clock.set(T0 + i * BAR + BAR)
        for s in self.symbols:
            self.ex.process_bar(s, i)
        await self.ex.drain()
        for s in self.symbols:
            await self.bots[s].on_candle(ctx_at(i, self.closes[s][i], (signals or {}).get(s), symbol=s))
        await self.ex.drain()

    async def run_until(self, i: int, signals: Mapping[int, Mapping[str, Side]] | None = None) -> None:
        while self.i < i:
            await self.step((signals or {}).get(self.i + 1))

    def positions(self) -> dict[str, Side]:
        return {s: p.side for s in self.symbols if (p := self.engine.position(s)) is not None}

    def entries(self, symbol: str) -> int:
        return len(self.journal.orders(symbol, "ENTRY"))


class YieldingBalance(SimExchange):
    """The balance read yields to the loop, as a real REST read does: the other bots run."""

    async def balance(self) -> float:
        await asyncio.sleep(0)
        return await super().balance()


async def test_entries_decided_at_the_same_time_never_pass_the_limits_together() -> None:
    """Live, the symbols' candle jobs run at once. Every entry takes the global entry lock
    around its risk check, balance read, order and registration (SPEC §13 row 16): three LONG
    signals at the same moment open two positions, the third is refused. Without the lock,
    each check ran before the others registered and all three opened."""
    m = Market({s: flat(100, 3) for s in (XRP, TRX, DOGE)}, exchange_cls=YieldingBalance)
    await m.start()
    await m.step()
    m.i += 1
    m.clock.set(T0 + m.i * BAR + BAR)
    for s in m.symbols:
        m.ex.process_bar(s, m.i)
    await m.ex.drain()
    await asyncio.gather(
        *(m.bots[s].on_candle(ctx_at(m.i, m.closes[s][m.i], LONG, symbol=s)) for s in m.symbols)
    )
    await m.ex.drain()
    assert len(m.positions()) == 2 and set(m.positions().values()) == {LONG}
    assert m.risk.open_positions == m.positions()


async def test_a_fourth_position_is_refused() -> None:
    m = Market({s: flat(100, 4) for s in (XRP, TRX, DOGE, ADA)})
    await m.start()
    await m.run_until(2, {1: {XRP: LONG, TRX: LONG, DOGE: SHORT, ADA: SHORT}})
    assert m.positions() == {XRP: LONG, TRX: LONG, DOGE: SHORT}
    assert m.risk.open_positions == m.positions()
    assert m.entries(ADA) == 0  # refused before any order was sent
    for s in (XRP, TRX, DOGE):  # each open position carries its own stop and take-profit
        assert len(m.engine.open_algo_orders(s)) == 2


async def test_a_third_same_direction_position_is_refused_the_opposite_side_allowed() -> None:
    m = Market({s: flat(100, 4) for s in (XRP, TRX, DOGE)})
    await m.start()
    await m.run_until(1, {1: {XRP: LONG, TRX: LONG, DOGE: LONG}})
    assert m.positions() == {XRP: LONG, TRX: LONG}
    assert m.entries(DOGE) == 0
    await m.run_until(2, {2: {DOGE: SHORT}})
    assert m.positions() == {XRP: LONG, TRX: LONG, DOGE: SHORT}


async def test_daily_loss_blocks_entries_not_exits_until_midnight() -> None:
    """XRP's stop costs ~6.8 % of the base: TRX's reverse still closes (no re-entry), DOGE may
    not enter that day, and may again at the first candle closing after 00:00 UTC."""
    m = Market(
        {
            XRP: [*flat(100, 3), SL_BAR, *flat(97, 96)],
            TRX: flat(100, 100),
            DOGE: flat(100, 100),
        }
    )
    await m.start()
    await m.run_until(3, {1: {XRP: LONG, TRX: LONG}})
    (loss,) = m.bots[XRP].closed_trades
    assert loss.reason is CloseReason.SL
    assert -loss.net_pnl / m.risk.base_balance > 0.05
    assert m.positions() == {TRX: LONG}
    await m.run_until(5, {4: {TRX: SHORT, DOGE: LONG}, 5: {XRP: SHORT}})
    assert [t.reason for t in m.bots[TRX].closed_trades] == [CloseReason.REVERSE]  # the exit ran
    assert m.positions() == {} and m.risk.open_positions == {}
    assert (m.entries(XRP), m.entries(TRX), m.entries(DOGE)) == (1, 1, 0)
    assert m.risk.daily_pnl == pytest.approx(loss.net_pnl + m.bots[TRX].closed_trades[0].net_pnl)
    await m.run_until(94, {94: {DOGE: LONG}})  # closes at 23:45 UTC: still blocked
    assert m.entries(DOGE) == 0
    await m.run_until(95, {95: {DOGE: LONG}})  # closes at 00:00 UTC: a new day
    assert m.positions() == {DOGE: LONG}
    assert m.risk.daily_pnl == 0.0
