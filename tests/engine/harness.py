"""The engine tests' worlds: a bot on the real simulated exchange (``World``), exchanges that
misbehave in one precise way, and a scripted port (``FakePort``) for REST-only scenarios.

Why a module of its own: the bot's tests are split by behaviour across several files and all
build the same worlds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from perpbot.config import AppConfig
from perpbot.domain.events import ExchangeEvent
from perpbot.domain.types import (
    AlgoStatus,
    ClosedTrade,
    ConditionalOrder,
    Fill,
    Income,
    Order,
    OrderResult,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Side,
    SymbolFilters,
)
from perpbot.engine.bot import SymbolBot
from perpbot.engine.clock import SimClock
from perpbot.engine.context import CandleContext
from perpbot.engine.journal import Journal
from perpbot.engine.notifier import RecordingNotifier
from perpbot.engine.risk import RiskManager
from perpbot.exchange.errors import NO_SUCH_ORDER, ExchangeError
from perpbot.exchange.port import EventHandler
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.faults import FaultPlan
from perpbot.exchange.sim.settings import SimSettings
from perpbot.ml.decision import FilterDecision, PassThroughFilter

from .factories import BAR, OHLC, SYM, T0, ctx_at

FILT = SymbolFilters(SYM, tick_size=0.01, step_size=0.001, min_qty=0.001, min_notional=5.0)


EXACT = SimSettings(slippage_bps=0.0)


LONG, SHORT = Side.LONG, Side.SHORT


class ScriptedFilter:
    """An entry filter with a model: records every decision request. It answers ``allow``, or
    the answers of ``script`` in order while they last."""

    has_model = True

    def __init__(self, allow: bool = True, script: Sequence[bool] = ()) -> None:
        self.allow = allow
        self.script = list(script)
        self.calls: list[np.ndarray] = []
        self.reloads = 0

    def maybe_reload(self) -> None:
        self.reloads += 1

    def decide(self, features: np.ndarray) -> FilterDecision:
        self.calls.append(features)
        if self.script:
            self.allow = self.script.pop(0)
        if self.allow:
            return FilterDecision(True, 0.7, "lgbm", "accepted")
        return FilterDecision(False, 0.3, "lgbm", "below_threshold")


class DoubleDelivery(SimExchange):
    """Every event is delivered twice (a redelivering stream, SPEC §13 row 7)."""

    def subscribe(self, handler: EventHandler) -> None:
        async def twice(ev: ExchangeEvent) -> None:
            await handler(ev)
            await handler(ev)

        super().subscribe(twice)


class HoldingExchange(SimExchange):
    """Holds events back from the bot while ``hold`` is set (a stalled user stream)."""

    hold = False

    def subscribe(self, handler: EventHandler) -> None:
        self.held: list[ExchangeEvent] = []
        self._bot_handler = handler

        async def gate(ev: ExchangeEvent) -> None:
            if self.hold:
                self.held.append(ev)
            else:
                await handler(ev)

        super().subscribe(gate)

    async def release(self) -> None:
        self.hold = False
        held, self.held = self.held, []
        for ev in held:
            await self._bot_handler(ev)


class FailingProtection(SimExchange):
    """Rejects conditional orders of the given types; optionally rejects reduce-only closes."""

    fail_types: frozenset[OrderType] = frozenset({OrderType.STOP_MARKET})
    fail_close = False
    attempts = 0

    async def place_conditional(
        self, symbol: str, order_type: OrderType, *args: Any, **kw: Any
    ) -> ConditionalOrder:
        if order_type in self.fail_types:
            self.attempts += 1
            raise ExchangeError(-1008, "Server is currently overloaded with other requests.")
        return await super().place_conditional(symbol, order_type, *args, **kw)

    async def market_order(self, symbol: str, side: OrderSide, quantity: float, **kw: Any) -> OrderResult:
        if self.fail_close and kw.get("reduce_only"):
            raise ExchangeError(-1008, "Server is currently overloaded with other requests.")
        return await super().market_order(symbol, side, quantity, **kw)


class World:
    """One symbol on the simulated exchange, a bot, a shared risk manager and a journal."""

    def __init__(
        self,
        bars: Sequence[OHLC],
        *,
        settings: SimSettings = EXACT,
        funding: Sequence[float] | None = None,
        exchange_cls: type[SimExchange] = SimExchange,
        entry_filter: Any = None,
        journal: Journal | None = None,
        config: AppConfig | None = None,
        base: float = 1000.0,
        engine: MatchingEngine | None = None,
        risk_cls: type[RiskManager] = RiskManager,
        notifier: RecordingNotifier | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        arr = np.asarray(bars, dtype=np.float64)
        self.t = T0 + np.arange(len(arr), dtype=np.int64) * BAR
        self.bars = arr
        if engine is None:
            engine = MatchingEngine(settings, {SYM: FILT})
            engine.add_bars(SYM, self.t, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], funding)
        self.engine = engine
        self.clock = SimClock(T0)
        if faults is None:
            self.ex = exchange_cls(engine)
        else:  # the hostile exchange (issue 7 §1), timed on the bots' clock
            self.ex = exchange_cls(engine, faults=faults, clock=self.clock)
        self.journal = journal or Journal()
        self.cfg = config or AppConfig(symbols=(SYM,))
        self.risk = risk_cls(self.cfg, self.clock, journal=self.journal)
        self.risk.set_base_balance(base)
        self.notifier = notifier or RecordingNotifier()
        self.filter = entry_filter or PassThroughFilter()
        self.bot = SymbolBot(
            SYM, self.cfg, self.ex, self.risk, self.filter, self.journal, self.clock, self.notifier
        )
        self.i = -1

    async def start(self, ctx: CandleContext | None = None) -> None:
        await self.ex.start()
        await self.bot.start(ctx)
        await self.ex.drain()

    async def step(self, signal: Side | None = None, atr: float = 2.0) -> None:
        self.i += 1
        i = self.i
        self.clock.set(int(self.t[i]) + BAR)
        self.ex.process_bar(SYM, i)
        await self.ex.drain()
        await self.bot.on_candle(ctx_at(i, float(self.bars[i, 3]), signal, atr))
        await self.ex.drain()

    async def run(self, signals: dict[int, Side], atr: float = 2.0, until: int | None = None) -> None:
        last = len(self.bars) - 1 if until is None else until
        while self.i < last:
            await self.step(signals.get(self.i + 1), atr)

    def crash(self) -> None:
        """SIGKILL: the process hears nothing more and writes nothing more to its journal."""
        self.ex._handlers.clear()
        self.journal.close()

    async def restart(self, ctx: CandleContext | None) -> SymbolBot:
        """A new process: a new bot on the same journal file, exchange and risk manager, started
        (recovery) on ``ctx``."""
        journal = Journal(self.journal.path)
        bot = SymbolBot(SYM, self.cfg, self.ex, self.risk, self.filter, journal, self.clock, self.notifier)
        await bot.start(ctx)
        return bot

    def algo_orders(self) -> list[ConditionalOrder]:
        return self.engine.open_algo_orders(SYM)

    def income_total(self) -> float:
        return sum(r.income for r in self.engine.income_history(SYM))


def assert_trade_accounting(trade: ClosedTrade) -> None:
    assert trade.net_pnl == pytest.approx(
        trade.realized_pnl - trade.entry_fee - trade.exit_fee + trade.funding, abs=1e-12
    )


@dataclass
class FakePort:
    """A scripted ExchangePort: returns what the test sets and logs every call."""

    pos: Position | None = None
    incomes: list[Income] = field(default_factory=list)
    algo: list[ConditionalOrder] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    fail_position: bool = False
    handlers: list[EventHandler] = field(default_factory=list)
    orders: dict[int, Order] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)

    async def symbol_filters(self, symbol: str) -> SymbolFilters:
        self.calls.append("symbol_filters")
        return FILT

    async def balance(self) -> float:
        self.calls.append("balance")
        return 1000.0

    async def position(self, symbol: str) -> Position | None:
        self.calls.append("position")
        if self.fail_position:
            raise RuntimeError("boom")
        return self.pos

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        self.calls.append("set_leverage")

    async def set_isolated_margin(self, symbol: str) -> None:
        self.calls.append("set_isolated_margin")

    async def market_order(self, symbol: str, side: OrderSide, quantity: float, **kw: Any) -> OrderResult:
        self.calls.append("market_order")
        order_id = len(self.orders) + 1
        cid = str(kw.get("client_order_id") or "")
        self.orders[order_id] = Order(
            symbol, order_id, side, OrderType.MARKET, quantity, OrderStatus.FILLED,
            bool(kw.get("reduce_only")), quantity, 100.0, cid,
        )  # fmt: skip
        return OrderResult(order_id, OrderStatus.FILLED, quantity, 100.0)

    async def place_conditional(
        self,
        symbol: str,
        order_type: OrderType,
        side: OrderSide,
        quantity: float,
        trigger_price: float,
        **kw: Any,
    ) -> ConditionalOrder:
        self.calls.append("place_conditional")
        return ConditionalOrder(symbol, 77, side, order_type, quantity, trigger_price, AlgoStatus.NEW)

    async def open_orders(self, symbol: str) -> list[Order]:
        self.calls.append("open_orders")
        return []

    async def open_conditional_orders(self, symbol: str) -> list[ConditionalOrder]:
        self.calls.append("open_conditional_orders")
        return list(self.algo)

    async def cancel_order(self, symbol: str, order_id: int) -> None:
        self.calls.append("cancel_order")

    async def cancel_conditional(self, symbol: str, algo_id: int) -> None:
        self.calls.append("cancel_conditional")

    async def cancel_all_orders(self, symbol: str) -> None:
        self.calls.append("cancel_all_orders")

    async def cancel_all_conditional(self, symbol: str) -> None:
        self.calls.append("cancel_all_conditional")
        self.algo = []

    async def income_history(
        self, symbol: str, start_ms: int, income_types: tuple[str, ...] = ()
    ) -> list[Income]:
        self.calls.append("income_history")
        return list(self.incomes)  # deliberately unfiltered: the bot must filter

    async def get_order(self, symbol: str, *, order_id: int = 0, client_order_id: str = "") -> Order:
        self.calls.append("get_order")
        for o in self.orders.values():
            if o.order_id == order_id or (client_order_id and o.client_order_id == client_order_id):
                return o
        raise ExchangeError(NO_SUCH_ORDER, "Order does not exist.")

    async def get_conditional(
        self, symbol: str, *, algo_id: int = 0, client_algo_id: str = ""
    ) -> ConditionalOrder:
        self.calls.append("get_conditional")
        for a in self.algo:
            if a.algo_id == algo_id:
                return a
        raise ExchangeError(NO_SUCH_ORDER, "Order does not exist.")

    async def user_trades(self, symbol: str, start_ms: int = 0) -> list[Fill]:
        self.calls.append("user_trades")
        return [f for f in self.fills if f.time_ms >= start_ms]

    def subscribe(self, handler: EventHandler) -> None:
        self.handlers.append(handler)


def fake_bot(
    port: FakePort, clock: SimClock, entry_filter: Any = None
) -> tuple[SymbolBot, RiskManager, Journal, RecordingNotifier]:
    cfg = AppConfig(symbols=(SYM,))
    journal = Journal()
    risk = RiskManager(cfg, clock, journal=journal)
    risk.set_base_balance(1000.0)
    notifier = RecordingNotifier()
    bot = SymbolBot(SYM, cfg, port, risk, entry_filter or PassThroughFilter(), journal, clock, notifier)
    return bot, risk, journal, notifier


def protected_long_port() -> FakePort:
    """An exchange holding a LONG 50 @ 100 with its stop (algo 11, 96) and take-profit (12, 104)."""
    return FakePort(
        pos=Position(SYM, LONG, 50.0, 100.0),
        algo=[
            ConditionalOrder(SYM, 11, OrderSide.SELL, OrderType.STOP_MARKET, 50.0, 96.0, AlgoStatus.NEW),
            ConditionalOrder(
                SYM, 12, OrderSide.SELL, OrderType.TAKE_PROFIT_MARKET, 50.0, 104.0, AlgoStatus.NEW
            ),
        ],
    )
