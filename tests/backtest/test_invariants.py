"""Property tests of the backtester: invariants that must hold on ANY market.

Hypothesis draws whole runs — 2 to 4 symbols in any processing order, synthetic markets of 20–60
days from any seed with some symbols listed late, delisted early or missing a stretch of candles,
loose strategy parameters (many signals, tight and wide stops), leverage 1–20, any
``MAX_SAME_DIRECTION``, fees, slippage and starting balance, ML off — and every run is checked for:

1. accounting: the wallet moved by exactly the trades' net PnL; every income row of the simulator
   (realised PnL, commission, funding, liquidation clearance) is in exactly one trade; every trade
   is one entry fill and one exit fill of the simulator, with its fees and PnL recomputable;
2. risk: position limits at every instant (the interval sweep of ``conftest`` and, after every
   step, the exchange's own positions), no entry on a day past the loss limit, none after a
   symbol's kill switch tripped, and the switch tripping exactly when its rule says so;
3. exchange rules: quantities on the step grid, entry notional ≥ the minimum, positive prices,
   exit not before entry, close reasons the backtest can produce;
4. safety, after every step of the loop (every ``drain``): a symbol with a position has exactly
   one reduce-only STOP_MARKET and one TAKE_PROFIT_MARKET for its whole quantity on the loss and
   profit sides of both the entry and the last price, and the bot agrees with the exchange; a
   flat symbol has no algo order left;
5. determinism: the same inputs run again (with an on-disk journal instead of ``:memory:``) give
   the same trades, fingerprint and wallet, and the journal holds exactly those trades.

The loop is observed through a ``SimExchange`` subclass installed for the run: it only adds a
check after each ``drain()`` (the runner's "every event of this step was delivered" point) and
reads the public ``MatchingEngine`` queries (``position``, ``open_algo_orders``,
``income_history``, ``fills``).
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from perpbot.backtest.runner import BacktestConfig, BacktestResult, run_backtest
from perpbot.config import MAX_POSITIONS, AppConfig, SignalParams
from perpbot.data.schema import BAR_MS
from perpbot.data.synth import synth_market
from perpbot.domain.types import ClosedTrade, CloseReason, Fill, OrderType, Side
from perpbot.engine.journal import Journal
from perpbot.engine.kill_switch import evaluate
from perpbot.exchange.sim import adapter as sim_adapter
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.settings import SimSettings

from .conftest import (
    SYMS4,
    daily_limit_violations,
    exchange_violations,
    kill_switch_violations,
    risk_violations,
)

BARS_PER_DAY = 86_400_000 // BAR_MS
DAY_MS = 86_400_000

# What a backtest can close with. SYNC (exchange flat, bot not) and MANUAL (a close the bot did
# not send) mean the bot lost track of its own position: never legitimate in the simulator.
BACKTEST_REASONS = {
    CloseReason.TP,
    CloseReason.SL,
    CloseReason.REVERSE,
    CloseReason.LIQUIDATION,
    CloseReason.EMERGENCY,
    CloseReason.END_OF_DATA,
}


# --------------------------------------------------------------------------- generated runs


@dataclass(frozen=True)
class Cut:
    """How one symbol's frame is trimmed: late listing, early delisting, a hole of candles."""

    head: int  # bars dropped at the start
    tail: int  # bars dropped at the end
    hole_at: float  # where the hole starts, as a fraction of the remaining rows
    hole_len: int  # bars dropped there (0: no hole)


@dataclass(frozen=True)
class Scenario:
    symbols: tuple[str, ...]
    seed: int
    days: int
    leverage: int
    max_same_direction: int
    taker_fee: float
    slippage_bps: float
    initial_balance: float
    params: SignalParams
    symbol_params: tuple[tuple[str, SignalParams], ...]
    cuts: tuple[Cut, ...]
    start_day: int  # window start in whole days after the first candle (0: no start given)
    end_bars: int = 0  # window end in bars after the first candle (0: no end given)

    def markets(self) -> dict[str, pd.DataFrame]:
        out = {}
        for sym, cut in zip(self.symbols, self.cuts, strict=True):
            df = synth_market(self.days, self.seed, symbol=sym)
            df = df.iloc[cut.head : len(df) - cut.tail]
            if cut.hole_len:
                at = int(cut.hole_at * (len(df) - cut.hole_len))
                df = df.drop(df.index[at : at + cut.hole_len])
            out[sym] = df
        return out

    def app(self) -> AppConfig:
        return AppConfig(
            symbols=self.symbols,
            leverage=self.leverage,
            max_same_direction=self.max_same_direction,
            default_params=self.params,
            symbol_params=dict(self.symbol_params),
        )

    def config(
        self, markets: dict[str, pd.DataFrame], journal_path: Path | str = ":memory:"
    ) -> BacktestConfig:
        first = min(int(m.index.asi8[0]) for m in markets.values())

        def at(ms: int) -> datetime:
            return datetime.fromtimestamp(ms / 1000, tz=UTC)

        return BacktestConfig(
            symbols=self.symbols,
            markets=markets,
            use_ml=False,
            start=at(first + self.start_day * DAY_MS) if self.start_day else None,
            end=at(first + self.end_bars * BAR_MS) if self.end_bars else None,
            initial_balance=self.initial_balance,
            taker_fee=self.taker_fee,
            slippage_bps=self.slippage_bps,
            journal_path=journal_path,
        )


def _r2(x: float) -> float:
    return round(x, 2)


# Loose: threshold 1–2, ADX gate mostly off, low volume-surge bar → hundreds of signals per run.
# Stops from very tight (0.5 ATR: many SL/TP, gaps through them) to very wide (up to 15 ATR: at
# 20x the liquidation price comes first).
signal_params = st.builds(
    SignalParams,
    atr_sl_mult=st.floats(0.5, 15.0).map(_r2),
    atr_tp_mult=st.floats(0.5, 6.0).map(_r2),
    signal_threshold=st.integers(1, 2),
    adx_threshold=st.sampled_from([0.0, 0.0, 15.0]),
    vol_multiplier=st.floats(0.8, 1.6).map(_r2),
)

cuts = st.builds(
    Cut,
    head=st.sampled_from([0, 0, 17, BARS_PER_DAY + 5]),
    tail=st.sampled_from([0, 0, 31, 3 * BARS_PER_DAY]),
    hole_at=st.floats(0.0, 1.0),
    hole_len=st.sampled_from([0, 0, 1, 7, BARS_PER_DAY]),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    order = draw(st.permutations(SYMS4))
    symbols = tuple(order[: draw(st.integers(2, 4))])
    params = draw(signal_params)
    overridden = draw(st.lists(st.sampled_from(symbols), max_size=2, unique=True))
    return Scenario(
        symbols=symbols,
        seed=draw(st.integers(0, 10_000)),
        days=draw(st.integers(20, 60)),
        leverage=draw(st.integers(1, 20)),
        max_same_direction=draw(st.integers(1, 3)),
        taker_fee=draw(st.sampled_from([0.0, 0.0002, 0.0005, 0.001])),
        slippage_bps=draw(st.sampled_from([0.0, 1.0, 5.0])),
        initial_balance=draw(st.sampled_from([30.0, 200.0, 1000.0, 50_000.0])),
        params=params,
        symbol_params=tuple((s, draw(signal_params)) for s in sorted(overridden)),
        cuts=tuple(draw(cuts) for _ in symbols),
        start_day=draw(st.sampled_from([0, 0, 2])),
        # An end inside the data, off the day grid: positions are open there (END_OF_DATA).
        end_bars=draw(st.sampled_from([0, 0, 4 * BARS_PER_DAY + 37, 11 * BARS_PER_DAY + 5])),
    )


# --------------------------------------------------------------------------- the probe


@dataclass
class Probe:
    """What the checking exchange saw: the engine, the bots and every breach after a drain."""

    max_same: int
    engine: MatchingEngine | None = None
    bots: dict[str, Any] = field(default_factory=dict)
    checks: int = 0
    protected: int = 0  # (check, symbol) pairs with an open position
    violations: list[str] = field(default_factory=list)

    def flag(self, msg: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(msg)

    def check(self, engine: MatchingEngine) -> None:
        self.checks += 1
        now = engine.now_ms
        sides: Counter[Side] = Counter()
        for sym in engine.symbols():
            pos = engine.position(sym)
            algos = engine.open_algo_orders(sym)
            bot = self.bots.get(sym)
            at = f"t={now} {sym}"
            if pos is None:
                if algos:
                    self.flag(
                        f"{at}: flat with open algo orders {[(a.type.value, a.algo_id) for a in algos]}"
                    )
                if bot is not None and bot.in_position:
                    self.flag(f"{at}: exchange flat, bot holds {bot.state.side}")
                continue
            self.protected += 1
            sides[pos.side] += 1
            step = engine.symbol_filters(sym).step_size
            kinds = Counter(a.type for a in algos)
            if kinds != Counter({OrderType.STOP_MARKET: 1, OrderType.TAKE_PROFIT_MARKET: 1}):
                self.flag(f"{at}: {pos.side.value} {pos.quantity} protected by {dict(kinds)}")
                continue
            for a in algos:
                if a.side is not pos.side.exit_order_side or not a.reduce_only:
                    self.flag(f"{at}: {a.type.value} {a.side.value} reduce_only={a.reduce_only}")
                if abs(a.quantity - pos.quantity) > step / 2:
                    self.flag(f"{at}: {a.type.value} qty {a.quantity} != position {pos.quantity}")
            sl = next(a for a in algos if a.type is OrderType.STOP_MARKET)
            tp = next(a for a in algos if a.type is OrderType.TAKE_PROFIT_MARKET)
            last = engine.last_price(sym)
            s = pos.side.sign
            for ref, name in ((pos.entry_price, "entry"), (last, "last price")):
                if not (s * sl.trigger_price < s * ref < s * tp.trigger_price):
                    what = f"SL {sl.trigger_price} / TP {tp.trigger_price}"
                    self.flag(f"{at}: {pos.side.value} {what} vs {name} {ref}")
            if bot is not None:
                st_ = bot.state
                if st_.side is not pos.side or abs(st_.qty - pos.quantity) > step / 2:
                    self.flag(f"{at}: bot {st_.side} {st_.qty}, exchange {pos.side.value} {pos.quantity}")
                if (st_.sl_id, st_.tp_id) != (sl.algo_id, tp.algo_id):
                    self.flag(f"{at}: bot ids {(st_.sl_id, st_.tp_id)}, exchange {(sl.algo_id, tp.algo_id)}")
        if sum(sides.values()) > MAX_POSITIONS:
            self.flag(f"t={now}: {sum(sides.values())} positions open")
        for side, n in sides.items():
            if n > self.max_same:
                self.flag(f"t={now}: {n} {side.value} positions open")


@contextmanager
def probed_exchange(probe: Probe) -> Iterator[None]:
    """Install a ``SimExchange`` that checks the account after every ``drain`` (see the module
    docstring); the runner imports the class when it runs, so the subclass is what it builds."""

    class CheckingSimExchange(sim_adapter.SimExchange):
        def __init__(self, engine: MatchingEngine) -> None:
            super().__init__(engine)
            probe.engine = engine

        def subscribe(self, handler: Any) -> None:
            super().subscribe(handler)
            bot = getattr(handler, "__self__", None)
            if bot is not None:
                probe.bots[bot.symbol] = bot

        async def drain(self) -> None:
            await super().drain()
            probe.check(self.engine)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim_adapter, "SimExchange", CheckingSimExchange)
        yield


def run(cfg: BacktestConfig, app: AppConfig) -> BacktestResult:
    return asyncio.run(run_backtest(cfg, app))


# --------------------------------------------------------------------------- the invariants


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b)) + 1e-9 * scale


def accounting_violations(res: BacktestResult, engine: MatchingEngine) -> list[str]:
    """Wallet, income rows, fills and per-trade arithmetic agree (module docstring, 1)."""
    out: list[str] = []
    base = res.config.initial_balance
    trades = res.trades
    net = sum(t.net_pnl for t in trades)
    if not math.isclose(res.final_balance - base, net, rel_tol=1e-6, abs_tol=1e-6 * base):
        out.append(f"wallet moved {res.final_balance - base!r}, trades' net PnL {net!r}")
    if res.final_balance != engine.balance():
        out.append(f"final balance {res.final_balance} != engine wallet {engine.balance()}")

    rows = engine.income_history()
    income: dict[tuple[str, str], float] = defaultdict(float)
    for r in rows:
        income[(r.symbol, r.income_type)] += r.income
    if not _close(sum(r.income for r in rows), engine.balance() - base, base):
        out.append("income rows do not add up to the wallet's move")
    unknown = {k for _, k in income} - {"REALIZED_PNL", "COMMISSION", "FUNDING_FEE", "INSURANCE_CLEAR"}
    if unknown:
        out.append(f"unexpected income types {unknown}")
    taker = res.sim["taker_fee"]
    for sym in res.symbols:
        mine = [t for t in trades if t.symbol == sym]
        fees = sum(t.fees for t in mine)
        paid = -income[(sym, "COMMISSION")] - income[(sym, "INSURANCE_CLEAR")]
        if not _close(fees, paid, base):
            out.append(f"{sym}: trade fees {fees!r} != commission + clearance rows {paid!r}")
        commission = sum(f.commission for f in engine.fills(sym))
        if not _close(commission, -income[(sym, "COMMISSION")], base):
            out.append(f"{sym}: fills' commission {commission!r} != COMMISSION rows")
        for name, got, want in (
            ("realised PnL", sum(t.realized_pnl for t in mine), income[(sym, "REALIZED_PNL")]),
            ("funding", sum(t.funding for t in mine), income[(sym, "FUNDING_FEE")]),
        ):
            if not _close(got, want, base):
                out.append(f"{sym}: trades' {name} {got!r} != income rows {want!r}")
        # Every trade is exactly one entry order followed by one exit order, in the order the
        # simulator executed them (an order's executions are merged: qty, average price).
        fills = _orders(engine.fills(sym))
        ordered = sorted(mine, key=lambda t: t.entry_time_ms)
        if len(fills) != 2 * len(ordered):
            out.append(f"{sym}: {len(fills)} filled orders for {len(ordered)} trades")
            continue
        funding_rows = [r for r in rows if r.symbol == sym and r.income_type == "FUNDING_FEE"]
        step = engine.symbol_filters(sym).step_size
        for k, t in enumerate(ordered):
            e, x = fills[2 * k], fills[2 * k + 1]
            tag = f"{sym} trade entered {t.entry_time_ms}"
            # Prices within float noise: the bot reads the order's average price, Σ(q·p) / Σq.
            for f, side, time_ms, price, what in (
                (e, t.side.entry_order_side, t.entry_time_ms, t.entry_price, "entry"),
                (x, t.side.exit_order_side, t.exit_time_ms, t.exit_price, "exit"),
            ):
                if (f.side, f.time_ms) != (side, time_ms) or not (
                    abs(f.quantity - t.quantity) <= step / 2 and _close(f.price, price, 0.0)
                ):
                    out.append(f"{tag}: {what} fill {f} does not match")
            notional_in, notional_out = t.quantity * t.entry_price, t.quantity * t.exit_price
            if t.net_pnl != t.realized_pnl - t.entry_fee - t.exit_fee + t.funding:
                out.append(f"{tag}: net PnL is not realised − fees + funding")
            if not _close(
                t.realized_pnl, t.side.sign * (t.exit_price - t.entry_price) * t.quantity, notional_in
            ):
                out.append(f"{tag}: realised {t.realized_pnl!r} != side·(exit − entry)·qty")
            if not _close(t.entry_fee, taker * notional_in, notional_in):
                out.append(f"{tag}: entry fee {t.entry_fee!r} != taker·notional {taker * notional_in!r}")
            if t.reason is CloseReason.LIQUIDATION:
                cap = SimSettings().liquidation_fee_rate * notional_out  # the runner keeps the default
                if not (0.0 <= t.exit_fee <= cap * (1 + 1e-9)):
                    out.append(f"{tag}: liquidation clearance {t.exit_fee!r} outside [0, {cap!r}]")
            elif not _close(t.exit_fee, taker * notional_out, notional_out):
                out.append(f"{tag}: exit fee {t.exit_fee!r} != taker·notional {taker * notional_out!r}")
            paid = sum(r.income for r in funding_rows if t.entry_time_ms <= r.time_ms < t.exit_time_ms)
            if not _close(t.funding, paid, notional_in):
                out.append(f"{tag}: funding {t.funding!r} != settlements while open {paid!r}")
    return out


def _orders(fills: list[Fill]) -> list[Fill]:
    """Consecutive executions of one order merged into one (Σ qty, average price, Σ fees)."""
    out: list[Fill] = []
    for f in fills:
        if out and out[-1].order_id == f.order_id:
            last = out[-1]
            qty = last.quantity + f.quantity
            price = (last.price * last.quantity + f.price * f.quantity) / qty
            out[-1] = replace(last, quantity=qty, price=price, commission=last.commission + f.commission)
        else:
            out.append(f)
    return out


def kill_switch_trip_violations(res: BacktestResult) -> list[str]:
    """The switch trips exactly at the close of the first trade whose history meets its rule."""
    out: list[str] = []
    trips: dict[str, list[int]] = defaultdict(list)
    for trip in res.kill_switch_trips:
        trips[trip["symbol"]].append(int(trip["time_ms"]))
    for sym in res.symbols:
        mine = sorted((t for t in res.trades if t.symbol == sym), key=lambda t: t.exit_time_ms)
        pnls = [t.net_pnl for t in mine]
        want = next((mine[k].exit_time_ms for k in range(len(pnls)) if evaluate(pnls[: k + 1])), None)
        got = trips.get(sym, [])
        if (want is None and got) or (want is not None and got != [want]):
            out.append(f"{sym}: kill switch trips {got}, the rule says {want}")
    return out


def trade_rule_violations(res: BacktestResult, markets: dict[str, pd.DataFrame], max_same: int) -> list[str]:
    """Risk rules on the trade list (``conftest`` checkers) and the per-trade exchange rules."""
    closes = {
        s: dict(zip(m.index.as_unit("ms").asi8.tolist(), m["close"].tolist(), strict=True))
        for s, m in markets.items()
    }

    def checked_at(t: ClosedTrade) -> float:
        """The last price when the entry was accepted: the close of the candle it was sent at."""
        return closes[t.symbol][t.entry_time_ms - BAR_MS]

    out = [
        *risk_violations(res.trades, MAX_POSITIONS, max_same),
        *daily_limit_violations(res.trades, res.config.initial_balance),
        *kill_switch_violations(res.trades, res.kill_switch_trips),
        *kill_switch_trip_violations(res),
        *exchange_violations(res.trades, res.filters, checked_at),
    ]
    for k, t in enumerate(res.trades):
        if t.reason not in BACKTEST_REASONS:
            out.append(f"trade {k} {t.symbol}: close reason {t.reason.value}")
        # Only an emergency close (the stop could not be placed) may end at its entry's instant.
        instant = t.reason is CloseReason.EMERGENCY and t.exit_time_ms == t.entry_time_ms
        if not (
            res.start_ms <= t.entry_time_ms <= res.end_ms
            and (instant or t.entry_time_ms < t.exit_time_ms <= res.end_ms)
        ):
            out.append(
                f"trade {k} {t.symbol}: [{t.entry_time_ms}, {t.exit_time_ms}] outside the run or empty"
            )
        if t.entry_time_ms % BAR_MS:
            out.append(f"trade {k} {t.symbol}: entry at {t.entry_time_ms}, not a candle close")
        if not (t.entry_fee >= 0 and t.exit_fee >= 0 and math.isfinite(t.funding)):
            out.append(f"trade {k} {t.symbol}: fees {t.entry_fee}, {t.exit_fee}, funding {t.funding}")
    return out


@dataclass(frozen=True)
class Checked:
    result: BacktestResult
    probe: Probe


def check_scenario(sc: Scenario) -> Checked:
    """Run ``sc`` twice (probed with an in-memory journal, then plain with an on-disk one) and
    assert every invariant of the module docstring."""
    markets = sc.markets()
    app = sc.app()
    probe = Probe(max_same=sc.max_same_direction)
    with probed_exchange(probe):
        res = run(sc.config(markets), app)
    engine = probe.engine
    assert engine is not None and set(probe.bots) == set(sc.symbols)

    assert res.stats.bot_errors == 0, res.log_warnings
    assert res.stats.close_timeouts == 0
    assert not [w for w in res.warnings if "still open" in w]
    assert not probe.violations, probe.violations
    # At least one check per step the loop ran; the steps the skip-ahead passed over change
    # nothing on the exchange (every book quiet, every bot at rest: tests/backtest/test_skip_ahead.py).
    assert probe.checks >= res.stats.timeline_steps - res.stats.steps_skipped
    for sym in sc.symbols:  # the end: everything closed, nothing left resting
        assert engine.position(sym) is None and engine.open_algo_orders(sym) == []
    accounts = accounting_violations(res, engine)
    assert not accounts, accounts
    rules = trade_rule_violations(res, markets, sc.max_same_direction)
    assert not rules, rules

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite"
        again = run(sc.config(sc.markets(), journal_path=path), sc.app())
        with Journal(path) as journal:
            journaled = journal.closed_trades()
    assert again.fingerprint == res.fingerprint
    assert again.trades == res.trades
    assert again.final_balance == res.final_balance
    assert again.kill_switch_trips == res.kill_switch_trips
    key = _canonical
    assert sorted(journaled, key=key) == sorted(res.trades, key=key)
    return Checked(res, probe)


def _canonical(t: ClosedTrade) -> tuple[int, str, int, str]:
    return (t.entry_time_ms, t.symbol, t.exit_time_ms, t.side.value)


# --------------------------------------------------------------------------- the tests


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # No shrinking: one example costs ~1 s, so shrinking a failure takes many minutes; the
    # falsifying scenario is printed as drawn and reruns with ``check_scenario(Scenario(...))``.
    phases=(Phase.explicit, Phase.generate),
)
@given(sc=scenarios())
# Scenarios hypothesis found, kept as regressions. The first booked a liquidation's clearance
# fee twice (TRXUSDT re-entered at the very millisecond of its liquidation; fixed in the bot's
# ``_income_since_entry``). The second sizes ADAUSDT at the minimum notional and the next open
# gaps down, so the fill is below 5 USDT: legal, the exchange checks the price it accepted at.
@example(
    sc=Scenario(
        symbols=("TRXUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT"),
        seed=3737,
        days=42,
        leverage=15,
        max_same_direction=2,
        taker_fee=0.0002,
        slippage_bps=1.0,
        initial_balance=30.0,
        params=SignalParams(
            atr_sl_mult=7.6, atr_tp_mult=1.43, signal_threshold=2, adx_threshold=15.0, vol_multiplier=0.8
        ),
        symbol_params=(
            (
                "ADAUSDT",
                SignalParams(
                    atr_sl_mult=11.16,
                    atr_tp_mult=0.5,
                    signal_threshold=1,
                    adx_threshold=0.0,
                    vol_multiplier=0.8,
                ),
            ),
        ),
        cuts=(Cut(0, 0, 0.0, 0), Cut(101, 0, 0.27, 96), Cut(0, 288, 0.26, 1), Cut(17, 31, 1.0, 0)),
        start_day=0,
    )
)
@example(
    sc=Scenario(
        symbols=("ADAUSDT", "DOGEUSDT", "XRPUSDT", "TRXUSDT"),
        seed=1164,
        days=39,
        leverage=1,
        max_same_direction=1,
        taker_fee=0.0,
        slippage_bps=1.0,
        initial_balance=30.0,
        params=SignalParams(
            atr_sl_mult=1.1, atr_tp_mult=3.82, signal_threshold=1, adx_threshold=0.0, vol_multiplier=1.1
        ),
        symbol_params=(),
        cuts=(Cut(0, 288, 0.0, 0), Cut(17, 31, 1.0, 0), Cut(17, 31, 0.14, 1), Cut(17, 31, 0.94, 1)),
        start_day=0,
    )
)
# The third: an ADAUSDT entry whose stop could not be placed is closed at once (EMERGENCY, exit
# at the entry's instant); the interval sweep used to keep such a trade open for ever.
@example(
    sc=Scenario(
        symbols=("XRPUSDT", "TRXUSDT", "ADAUSDT", "DOGEUSDT"),
        seed=4096,
        days=20,
        leverage=6,
        max_same_direction=3,
        taker_fee=0.0,
        slippage_bps=0.0,
        initial_balance=50000.0,
        params=SignalParams(
            atr_sl_mult=5.89, atr_tp_mult=1.5, signal_threshold=1, adx_threshold=15.0, vol_multiplier=1.5
        ),
        symbol_params=(),
        cuts=(
            Cut(head=17, tail=31, hole_at=0.10996962403975188, hole_len=7),
            Cut(head=0, tail=31, hole_at=0.99, hole_len=7),
            Cut(head=0, tail=31, hole_at=0.10996962403975188, hole_len=96),
            Cut(head=0, tail=288, hole_at=0.6838113436263525, hole_len=7),
        ),
        start_day=0,
        end_bars=1061,
    )
)
def test_every_invariant_holds_on_any_market(sc: Scenario) -> None:
    check_scenario(sc)


# A fixed, busy scenario: proves the checks above are not vacuous on the same code path — the
# position limits bind, every kind of close the simulator can produce occurs (a liquidation on the
# wide-stop DOGE, END_OF_DATA at the window's end), the daily limit and the kill switch engage,
# and the safety check saw hundreds of (step, open position) pairs.
BUSY = Scenario(
    symbols=SYMS4,
    seed=1,
    days=60,
    leverage=20,
    max_same_direction=2,
    taker_fee=0.0005,
    slippage_bps=1.0,
    initial_balance=1000.0,
    params=SignalParams(
        atr_sl_mult=1.0, atr_tp_mult=2.0, signal_threshold=2, adx_threshold=0.0, vol_multiplier=1.2
    ),
    symbol_params=(("DOGEUSDT", SignalParams(atr_sl_mult=12.0, signal_threshold=1, adx_threshold=0.0)),),
    cuts=(
        Cut(0, 0, 0.0, 0),
        Cut(BARS_PER_DAY + 5, 0, 0.5, 7),
        Cut(0, 3 * BARS_PER_DAY, 0.0, 0),
        Cut(0, 0, 0.3, 1),
    ),
    start_day=0,
    end_bars=3 * BARS_PER_DAY + 37,
)


def test_the_invariants_are_not_vacuous() -> None:
    from .test_runner import _max_concurrency, _max_same_direction

    checked = check_scenario(BUSY)
    res, probe = checked.result, checked.probe
    trades = res.trades
    assert len(trades) >= 40
    assert set(Counter(t.reason for t in trades)) == BACKTEST_REASONS - {CloseReason.EMERGENCY}
    assert _max_concurrency(trades) == MAX_POSITIONS
    assert _max_same_direction(trades) == BUSY.max_same_direction
    assert probe.protected > 300
    assert any(t.funding != 0.0 for t in trades)
    assert res.kill_switch_trips and res.daily_limit_days


def test_the_probe_catches_an_unprotected_position() -> None:
    """The safety check itself: a naked position and a leftover algo order are both reported."""
    from perpbot.domain.types import OrderSide, SymbolFilters

    f = SymbolFilters("XRPUSDT", tick_size=0.0001, step_size=0.1, min_qty=0.1)
    g = SymbolFilters("TRXUSDT", tick_size=0.00001, step_size=1.0, min_qty=1.0)
    engine = MatchingEngine(SimSettings(), {"XRPUSDT": f, "TRXUSDT": g})
    t0 = 1_735_689_600_000
    for sym in ("XRPUSDT", "TRXUSDT"):
        engine.add_bars(sym, [t0, t0 + BAR_MS], [1.0, 1.0], [1.01, 1.01], [0.99, 0.99], [1.0, 1.0])
        engine.process_bar(sym, 0)
    engine.market_order("XRPUSDT", OrderSide.BUY, 100.0)
    engine.place_algo("XRPUSDT", OrderType.STOP_MARKET, OrderSide.SELL, 100.0, 0.95)
    engine.place_algo("TRXUSDT", OrderType.TAKE_PROFIT_MARKET, OrderSide.SELL, 10.0, 1.05, reduce_only=True)
    probe = Probe(max_same=2)
    probe.check(engine)
    assert any("XRPUSDT" in v and "protected by" in v for v in probe.violations)
    assert any("TRXUSDT" in v and "flat with open algo orders" in v for v in probe.violations)
