"""A multi-symbol market on the hostile simulated exchange, with the issue 7 §3 invariants
checked after every step. Used by the property test and by ``bench/bench_hostile.py``.

What one run is: ``HostileScenario`` (seeded random-walk candles per symbol, a signal schedule,
a ``FaultPlan``) drives real ``SymbolBot``s, one ``RiskManager`` and one ``SimExchange`` in hostile
mode, step by step as the backtest runner does (bars happen, events delivered, candles, then a
``reconcile()`` of every bot as the live runtime does every 5 min). After every step:

* every open position has a reduce-only SL and TP for its full quantity, at the latest
  ``GRACE_STEPS`` steps after it appeared or changed;
* the risk registry equals the exchange's positions (same bound; a symbol whose acknowledged
  entry order is still open on the exchange may be registered before it fills);
* at most ``MAX_POSITIONS`` positions and ``max_same_direction`` per side are open;
* the risk manager's daily PnL equals the journal's for that day (a loss is never counted twice).

At the end (every position closed, late events and delayed income let through): every execution
of the simulator is accounted in exactly one trade, the journal's trades equal the bots', and
the wallet equals the initial balance plus the sum of the trades' net PnL.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from perpbot.config import MAX_POSITIONS, AppConfig
from perpbot.domain.types import CloseReason, Side, SymbolFilters
from perpbot.engine.bot import SymbolBot
from perpbot.engine.clock import SimClock
from perpbot.engine.context import CandleContext
from perpbot.engine.journal import Journal
from perpbot.engine.notifier import RecordingNotifier
from perpbot.engine.risk import RiskManager
from perpbot.exchange.errors import ExchangeError
from perpbot.exchange.sim.adapter import SimExchange
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.faults import FaultPlan
from perpbot.exchange.sim.settings import SimSettings
from perpbot.ml.decision import PassThroughFilter

BAR_MS = 15 * 60_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
GRACE_STEPS = 1  # a violation must be repaired by the next step's reconcile
END_CLOSE_ROUNDS = 5
START_TRIES = 10
SYMBOLS = ("XRPUSDT", "TRXUSDT", "DOGEUSDT", "ADAUSDT")


@dataclass(frozen=True)
class HostileScenario:
    seed: int
    n_symbols: int = 3
    n_bars: int = 40
    p_signal: float = 0.25
    plan: FaultPlan = field(default_factory=FaultPlan)


@dataclass
class HostileReport:
    steps: int = 0
    trades: int = 0
    violations: list[str] = field(default_factory=list)


def _bars(rng: random.Random, n: int) -> np.ndarray:
    out = np.empty((n, 4))
    price = 100.0
    for i in range(n):
        o = price
        c = max(50.0, o + rng.gauss(0.0, 1.2))
        h = max(o, c) + abs(rng.gauss(0.0, 0.8))
        lo = min(o, c) - abs(rng.gauss(0.0, 0.8))
        out[i] = (o, h, lo, c)
        price = c
    return out


def _ctx(symbol: str, i: int, close: float, signal: Side | None) -> CandleContext:
    return CandleContext(
        symbol=symbol,
        open_time_ms=T0 + i * BAR_MS,
        close=close,
        atr=1.0,
        signal=signal,
        long_score=4,
        short_score=4,
        rsi=50.0,
        macd_hist=0.0,
        adx=30.0,
        vol_surge=True,
        features=np.zeros(26),
    )


async def run_hostile(sc: HostileScenario) -> HostileReport:
    """Run one scenario and return the invariant violations found (empty = all held)."""
    rng = random.Random(sc.seed)
    symbols = SYMBOLS[: sc.n_symbols]
    filters = {s: SymbolFilters(s, 0.01, 0.1, 0.1, 5.0) for s in symbols}
    engine = MatchingEngine(SimSettings(slippage_bps=1.0), filters)
    bars = {s: _bars(rng, sc.n_bars) for s in symbols}
    t = T0 + np.arange(sc.n_bars, dtype=np.int64) * BAR_MS
    for s in symbols:
        b = bars[s]
        funding = np.array([rng.uniform(-0.001, 0.001) for _ in range(sc.n_bars)])
        engine.add_bars(s, t, b[:, 0], b[:, 1], b[:, 2], b[:, 3], funding)
    clock = SimClock(T0)
    ex = SimExchange(engine, faults=sc.plan, clock=clock)
    journal = Journal()
    cfg = AppConfig(symbols=symbols)
    risk = RiskManager(cfg, clock, journal=journal)
    initial = engine.balance()
    risk.set_base_balance(initial * 10)  # the daily limit must not end every scenario early
    notifier = RecordingNotifier()
    bots = {
        s: SymbolBot(
            s, cfg, ex, risk, PassThroughFilter(), journal, clock, notifier, num_symbols=len(symbols)
        )
        for s in symbols
    }
    schedule = {
        (i, s): rng.choice((Side.LONG, Side.SHORT))
        for i in range(sc.n_bars - 1)
        for s in symbols
        if rng.random() < sc.p_signal
    }
    report = HostileReport()
    bad_since: dict[str, int] = {}
    await ex.start()
    try:
        for bot in bots.values():
            for attempt in range(START_TRIES):  # the runtime restarts a start that gave up
                try:
                    await bot.start(_ctx(bot.symbol, 0, 100.0, None))
                    break
                except ExchangeError:
                    if attempt == START_TRIES - 1:
                        raise
        for i in range(sc.n_bars):
            clock.set(int(t[i]) + BAR_MS)
            for s in symbols:
                ex.process_bar(s, i)
            await ex.drain()
            if i < sc.n_bars - 1:
                for s in symbols:
                    await bots[s].on_candle(_ctx(s, i, float(bars[s][i, 3]), schedule.get((i, s))))
                await ex.drain()
            for bot in bots.values():
                await bot.reconcile()
            await ex.drain()
            await _settle(bots.values(), ex)
            report.steps += 1
            _check_step(i, engine, risk, journal, cfg, symbols, bad_since, report)
        # The end: close everything, then let late events and delayed income through.
        for _ in range(END_CLOSE_ROUNDS):  # a close may expire: retried, as an operator would
            for bot in bots.values():
                if bot.in_position or engine.position(bot.symbol) is not None:
                    await bot.close_position(CloseReason.END_OF_DATA)
                await ex.drain()
            await _settle(bots.values(), ex)
        for k in range(1, 4):
            clock.set(int(t[-1]) + BAR_MS + k * 3_600_000)
            await ex.drain()
            for bot in bots.values():
                await bot.reconcile()
                await bot.wait_background()
            await ex.drain()
    finally:
        await ex.aclose()
    _check_end(engine, journal, bots, initial, symbols, report)
    return report


async def _settle(bots: Iterable[SymbolBot], ex: SimExchange) -> None:
    """Let the bots' background work (re-protection, cancel retries, late entries) finish
    before time moves on, as the runner does: simulated time does not pass while it runs."""
    while any(b.has_background for b in bots):
        for b in bots:
            await b.wait_background()
        await ex.drain()


def _check_step(
    i: int,
    engine: MatchingEngine,
    risk: RiskManager,
    journal: Journal,
    cfg: AppConfig,
    symbols: tuple[str, ...],
    bad_since: dict[str, int],
    report: HostileReport,
) -> None:
    problems: dict[str, str] = {}
    positions = {s: p for s in symbols if (p := engine.position(s)) is not None}
    for s, p in positions.items():
        algos = [o for o in engine.open_algo_orders(s) if o.reduce_only and o.quantity >= p.quantity - 1e-9]
        kinds = {o.type.value for o in algos}
        if kinds != {"STOP_MARKET", "TAKE_PROFIT_MARKET"}:
            problems[f"protection:{s}"] = f"{s} {p.side.value} {p.quantity} protected by {sorted(kinds)}"
    registry = risk.open_positions
    sides = {s: p.side for s, p in positions.items()}
    for s in set(registry) | set(sides):
        if s not in sides and any(not o.reduce_only for o in engine.open_orders(s)):
            continue  # registered for an acknowledged entry order that has not filled yet
        if registry.get(s) is not sides.get(s):
            problems[f"registry:{s}"] = f"{s}: registry {registry.get(s)} != exchange {sides.get(s)}"
    if len(positions) > MAX_POSITIONS:
        report.violations.append(f"step {i}: {len(positions)} positions open")
    for side in Side:
        if sum(1 for p in positions.values() if p.side is side) > cfg.max_same_direction:
            report.violations.append(f"step {i}: too many {side.value} positions")
    if abs(risk.daily_pnl - journal.daily_pnl(risk.day)) > 1e-6:
        report.violations.append(
            f"step {i}: risk daily PnL {risk.daily_pnl} != journal {journal.daily_pnl(risk.day)}"
        )
    for key in list(bad_since):
        if key not in problems:
            del bad_since[key]
    for key, text in problems.items():
        first = bad_since.setdefault(key, i)
        if i - first >= GRACE_STEPS:
            report.violations.append(f"step {i}: {text} (since step {first})")


def _check_end(
    engine: MatchingEngine,
    journal: Journal,
    bots: dict[str, SymbolBot],
    initial: float,
    symbols: tuple[str, ...],
    report: HostileReport,
) -> None:
    trades = [tr for b in bots.values() for tr in b.closed_trades]
    report.trades = len(trades)
    for s in symbols:
        if engine.position(s) is not None:
            report.violations.append(f"end: {s} still open on the exchange")
        keys = set(journal.accounted_keys(s))
        for f in engine.fills(s):
            if f"t:{f.trade_id}" not in keys:
                report.violations.append(f"end: {s} execution {f.trade_id} ({f.quantity}) in no trade")
    if len(journal.closed_trades()) != len(trades):
        report.violations.append(
            f"end: journal has {len(journal.closed_trades())} trades, bots {len(trades)}"
        )
    net = sum(tr.net_pnl for tr in trades)
    if abs(engine.balance() - (initial + net)) > 1e-6:
        report.violations.append(
            f"end: wallet {engine.balance():.8f} != initial {initial} + Σ net PnL {net:.8f}"
            f" (diff {engine.balance() - initial - net:.8f})"
        )
