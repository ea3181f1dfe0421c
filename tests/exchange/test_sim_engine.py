"""Simulated Binance USDT-M matching engine: rejections, arithmetic, candle scenarios, events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest

from perpbot.domain.events import AccountUpdate, AlgoUpdate, ExchangeEvent, OrderTradeUpdate
from perpbot.domain.types import AlgoStatus, OrderSide, OrderStatus, OrderType, Side, SymbolFilters
from perpbot.exchange import errors as E
from perpbot.exchange.errors import (
    INVALID_LEVERAGE,
    INVALID_ORDER_TYPE,
    INVALID_SYMBOL,
    MARGIN_TYPE_WITH_POSITION,
    QTY_BELOW_MIN,
    ExchangeError,
)
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.settings import SimSettings

SYM = "XRPUSDT"
BAR = 15 * 60_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, a funding time
FILT = SymbolFilters(SYM, tick_size=0.01, step_size=0.001, min_qty=0.001, min_notional=5.0)
EXACT = SimSettings(slippage_bps=0.0)  # exact arithmetic in most tests
BUY, SELL = OrderSide.BUY, OrderSide.SELL
STOP, TP = OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET

Bar = tuple[float, float, float, float]


def flat(price: float = 100.0) -> Bar:
    return (price, price, price, price)


def make(
    bars: Sequence[Bar],
    settings: SimSettings = EXACT,
    funding: Sequence[float] | None = None,
    t0: int = T0,
    symbol: str = SYM,
) -> MatchingEngine:
    arr = np.asarray(bars, dtype=np.float64)
    e = MatchingEngine(settings, {symbol: replace(FILT, symbol=symbol)})
    t = t0 + np.arange(len(bars), dtype=np.int64) * BAR
    e.add_bars(symbol, t, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], funding)
    return e


def code(fn, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(ExchangeError) as ei:
        fn(*args, **kwargs)
    return ei.value.code


def otus(events: Sequence[ExchangeEvent]) -> list[OrderTradeUpdate]:
    return [e for e in events if isinstance(e, OrderTradeUpdate)]


def trades(events: Sequence[ExchangeEvent]) -> list[OrderTradeUpdate]:
    return [e for e in otus(events) if e.execution_type in ("TRADE", "CALCULATED")]


def algos(events: Sequence[ExchangeEvent]) -> list[AlgoUpdate]:
    return [e for e in events if isinstance(e, AlgoUpdate)]


def shape(events: Sequence[ExchangeEvent]) -> list[str]:
    """A compact picture of an event sequence for exact-order assertions."""
    out = []
    for e in events:
        if isinstance(e, OrderTradeUpdate):
            out.append(f"OTU:{e.execution_type}:{e.status.value}")
        elif isinstance(e, AlgoUpdate):
            out.append(f"ALGO:{e.status.value}")
        else:
            out.append(f"ACC:{e.reason}")
    return out


def open_long(
    e: MatchingEngine,
    qty: float = 10.0,
    lev: int = 10,
    sl: float | None = 98.0,
    tp: float | None = 103.0,
    side: Side = Side.LONG,
) -> tuple[int, int]:
    """Bar 0 closes, the bot enters at open[1] and protects the position (like the real bot)."""
    e.process_bar(SYM, 0)
    e.set_margin_type(SYM, "ISOLATED")
    e.set_leverage(SYM, lev)
    e.market_order(SYM, side.entry_order_side, qty)
    exit_side = side.exit_order_side
    sl_id = e.place_algo(SYM, STOP, exit_side, qty, sl).algo_id if sl is not None else 0
    tp_id = e.place_algo(SYM, TP, exit_side, qty, tp).algo_id if tp is not None else 0
    e.pop_events()
    return sl_id, tp_id


# ====================================================================== rejections


def test_every_rejection_code() -> None:
    e = make([flat(), flat(), flat()])
    e.process_bar(SYM, 0)
    assert code(e.market_order, "BTCUSDT", BUY, 1.0) == INVALID_SYMBOL
    assert code(e.market_order, SYM, BUY, 0.0) == E.INVALID_QUANTITY
    assert code(e.market_order, SYM, BUY, -1.0) == E.INVALID_QUANTITY
    assert code(e.market_order, SYM, BUY, 0.0105) == E.PRECISION
    assert code(e.market_order, SYM, BUY, 0.04) == E.MIN_NOTIONAL  # 4 USDT
    assert code(e.market_order, SYM, SELL, 1.0, reduce_only=True) == E.REDUCE_ONLY_REJECTED  # flat
    assert code(e.market_order, SYM, BUY, 1.0, order_type=STOP) == E.CONDITIONAL_ON_ORDER_ENDPOINT
    assert code(e.market_order, SYM, BUY, 1.0, order_type=TP) == E.CONDITIONAL_ON_ORDER_ENDPOINT
    assert code(e.market_order, SYM, BUY, 1.0, order_type=OrderType.LIMIT) == INVALID_ORDER_TYPE
    # 1000 USDT at 20x default leverage buys at most ~200 units of a 100 USDT coin.
    assert code(e.market_order, SYM, BUY, 250.0) == E.MARGIN_INSUFFICIENT
    assert code(e.place_algo, SYM, OrderType.MARKET, SELL, 1.0, 90.0) == INVALID_ORDER_TYPE
    assert code(e.place_algo, SYM, STOP, SELL, 1.0, 90.005) == E.PRECISION  # off tick
    assert code(e.place_algo, SYM, STOP, SELL, 1.0, 100.0) == E.ORDER_WOULD_IMMEDIATELY_TRIGGER
    assert code(e.place_algo, SYM, STOP, BUY, 1.0, 99.0) == E.ORDER_WOULD_IMMEDIATELY_TRIGGER
    assert code(e.place_algo, SYM, TP, SELL, 1.0, 99.0) == E.ORDER_WOULD_IMMEDIATELY_TRIGGER
    assert code(e.place_algo, SYM, TP, BUY, 1.0, 101.0) == E.ORDER_WOULD_IMMEDIATELY_TRIGGER
    assert code(e.place_algo, SYM, STOP, SELL, 0.04, 90.0, reduce_only=False) == E.MIN_NOTIONAL
    assert code(e.cancel_algo, SYM, 12345) == E.UNKNOWN_ORDER
    assert code(e.cancel_order, SYM, 12345) == E.UNKNOWN_ORDER
    assert code(e.set_leverage, SYM, 0) == INVALID_LEVERAGE
    assert code(e.set_leverage, SYM, 126) == INVALID_LEVERAGE
    e.set_margin_type(SYM, "ISOLATED")
    assert code(e.set_margin_type, SYM, "ISOLATED") == E.NO_NEED_TO_CHANGE_MARGIN_TYPE
    e.market_order(SYM, BUY, 1.0)
    assert code(e.market_order, SYM, BUY, 1.0, reduce_only=True) == E.REDUCE_ONLY_REJECTED  # same side
    assert code(e.set_margin_type, SYM, "CROSSED") == MARGIN_TYPE_WITH_POSITION
    # Rejections leave no trace in the event stream beyond the accepted order.
    assert [x.order_id for x in otus(e.pop_events())] == [1_000_001, 1_000_001]


def test_min_qty_rejection_and_reduce_only_small_notional_allowed() -> None:
    e = MatchingEngine(EXACT, {SYM: replace(FILT, min_qty=0.01)})
    e.add_bars(SYM, [T0, T0 + BAR], [100.0, 100.0], [100.0, 100.0], [100.0, 100.0], [100.0, 100.0])
    e.process_bar(SYM, 0)
    assert code(e.market_order, SYM, BUY, 0.005) == QTY_BELOW_MIN
    e.market_order(SYM, BUY, 1.0)
    r = e.market_order(SYM, SELL, 0.04, reduce_only=True)  # 4 USDT, below min notional: allowed
    assert r.status is OrderStatus.FILLED and r.executed_qty == 0.04


def test_reduce_only_larger_than_position_only_closes_it() -> None:
    e = make([flat(), flat(), flat()])
    e.process_bar(SYM, 0)
    e.market_order(SYM, BUY, 1.0)
    r = e.market_order(SYM, SELL, 5.0, reduce_only=True)
    assert r.executed_qty == 1.0 and r.status is OrderStatus.FILLED
    assert e.position(SYM) is None


def test_margin_check_counts_fee_and_leverage() -> None:
    e = make([flat(), flat()], SimSettings(slippage_bps=0.0, initial_balance=100.0))
    e.process_bar(SYM, 0)
    e.set_leverage(SYM, 10)
    # 10 units at 100 = 1000 notional -> 100 margin + 0.5 fee > 100 available
    assert code(e.market_order, SYM, BUY, 10.0) == E.MARGIN_INSUFFICIENT
    e.market_order(SYM, BUY, 9.9)  # 99 margin + 0.495 fee fits
    assert e.available_balance() == pytest.approx(100.0 - 99.0 - 0.495)


# ====================================================================== fills, fees, PnL


def test_market_fills_at_next_open_with_adverse_slippage() -> None:
    bars = [(100.0, 101.0, 99.0, 100.5), (101.0, 102.0, 100.0, 101.5), (102.0, 102.0, 102.0, 102.0)]
    e = make(bars, SimSettings(slippage_bps=10.0))
    e.process_bar(SYM, 0)
    buy = e.market_order(SYM, BUY, 1.0)
    assert buy.avg_price == pytest.approx(101.0 * 1.001)  # open[1], not close[0]
    e.process_bar(SYM, 1)
    e.process_bar(SYM, 2)  # last bar: the next tradable price is its close
    sell = e.market_order(SYM, SELL, 1.0, reduce_only=True)
    assert sell.avg_price == pytest.approx(102.0 * 0.999)


def test_fee_and_realised_pnl_arithmetic_and_income_rows() -> None:
    e = make([flat(100.0), flat(100.0), flat(110.0), flat(110.0)])
    e.process_bar(SYM, 0)
    e.set_leverage(SYM, 10)
    entry = e.market_order(SYM, BUY, 10.0)
    assert entry.avg_price == 100.0
    pos = e.position(SYM)
    assert pos is not None and pos.side is Side.LONG and pos.quantity == 10.0
    assert pos.isolated_margin == pytest.approx(100.0)
    assert e.balance() == pytest.approx(1000.0 - 0.5)  # commission 0.05 % of 1000
    e.process_bar(SYM, 1)
    t_exit = e.now_ms
    close = e.market_order(SYM, SELL, 10.0, reduce_only=True)  # fills at open[2] = 110
    assert close.avg_price == 110.0
    assert e.position(SYM) is None
    assert e.balance() == pytest.approx(1000.0 - 0.5 + 100.0 - 0.55)
    rows = e.income_history(SYM)
    assert [(r.income_type, round(r.income, 10)) for r in rows] == [
        ("COMMISSION", -0.5),
        ("REALIZED_PNL", 100.0),
        ("COMMISSION", -0.55),
    ]
    assert [r.income_type for r in e.income_history(SYM, start_ms=t_exit)] == ["REALIZED_PNL", "COMMISSION"]
    assert e.income_history(SYM, income_types=("REALIZED_PNL",))[0].income == pytest.approx(100.0)
    assert e.income_history("DOGEUSDT") == []
    assert e.income_history(SYM, end_ms=t_exit - 1)[0].income == pytest.approx(-0.5)
    assert e.income_count(SYM) == len(rows) == 3 and e.income_count("DOGEUSDT") == 0
    tr = trades(e.pop_events())
    assert tr[-1].realized_pnl == pytest.approx(100.0) and tr[-1].commission == pytest.approx(0.55)
    assert tr[0].realized_pnl == 0.0  # an entry carries no realised PnL


def test_short_pnl_and_partial_reduce_releases_margin_pro_rata() -> None:
    e = make([flat(100.0), flat(100.0), flat(90.0)])
    e.process_bar(SYM, 0)
    e.set_leverage(SYM, 5)
    e.market_order(SYM, SELL, 10.0)
    e.process_bar(SYM, 1)
    r = e.market_order(SYM, BUY, 4.0, reduce_only=True)  # at 90
    assert r.avg_price == 90.0
    pos = e.position(SYM)
    assert pos is not None and pos.side is Side.SHORT and pos.quantity == 6.0
    assert pos.isolated_margin == pytest.approx(200.0 * 0.6)
    assert trades(e.pop_events())[-1].realized_pnl == pytest.approx(40.0)


def test_non_reduce_only_order_can_flip_the_position() -> None:
    e = make([flat(), flat(), flat()])
    e.process_bar(SYM, 0)
    e.market_order(SYM, BUY, 1.0)
    e.market_order(SYM, SELL, 3.0)
    pos = e.position(SYM)
    assert pos is not None and pos.side is Side.SHORT and pos.quantity == 2.0


def test_partial_fills_aggregate_to_one_order_id() -> None:
    e = make(
        [flat(100.0), flat(100.0), flat(105.0)], SimSettings(slippage_bps=0.0, max_fill_qty_per_execution=4.0)
    )
    e.process_bar(SYM, 0)
    e.market_order(SYM, BUY, 10.0)
    e.process_bar(SYM, 1)
    e.pop_events()
    r = e.market_order(SYM, SELL, 10.0, reduce_only=True)
    ev = e.pop_events()
    assert shape(ev) == [
        "OTU:NEW:NEW",
        "OTU:TRADE:PARTIALLY_FILLED",
        "ACC:ORDER",
        "OTU:TRADE:PARTIALLY_FILLED",
        "ACC:ORDER",
        "OTU:TRADE:FILLED",
        "ACC:ORDER",
    ]
    tr = trades(ev)
    assert {t.order_id for t in tr} == {r.order_id}
    assert [t.last_filled_qty for t in tr] == [4.0, 4.0, 2.0]
    assert [t.cumulative_filled_qty for t in tr] == [4.0, 8.0, 10.0]
    assert len({t.trade_id for t in tr}) == 3
    assert sum(t.realized_pnl for t in tr) == pytest.approx(50.0)
    assert sum(t.commission for t in tr) == pytest.approx(10 * 105.0 * 0.0005)
    assert r.executed_qty == 10.0 and r.avg_price == pytest.approx(105.0)


# ====================================================================== funding


def test_funding_across_a_position_three_settlements() -> None:
    n = 100
    bars = [flat(100.0)] * n
    rates = np.zeros(n)
    rates[32], rates[64], rates[96] = 0.0001, -0.0002, 0.0003
    rates[16] = 0.05  # not a settlement time (04:00 UTC): must be ignored
    e = make(bars, funding=rates)
    e.process_bar(SYM, 0)
    e.set_leverage(SYM, 10)
    e.market_order(SYM, BUY, 10.0)  # long 1000 USDT notional
    start_wallet = e.balance()
    iw0 = e.position(SYM).isolated_margin  # type: ignore[union-attr]
    e.pop_events()
    for i in range(1, n):
        e.process_bar(SYM, i)
    rows = e.income_history(SYM, income_types=("FUNDING_FEE",))
    assert [r.time_ms for r in rows] == [T0 + k * 8 * 3600_000 for k in (1, 2, 3)]
    assert [round(r.income, 10) for r in rows] == [-0.1, 0.2, -0.3]  # longs pay positive funding
    assert e.balance() == pytest.approx(start_wallet - 0.2)
    assert e.position(SYM).isolated_margin == pytest.approx(iw0 - 0.2)  # type: ignore[union-attr]
    upd = [x for x in e.pop_events() if isinstance(x, AccountUpdate)]
    assert [u.reason for u in upd] == ["FUNDING_FEE"] * 3
    assert [round(u.balances[0].balance_change, 10) for u in upd] == [-0.1, 0.2, -0.3]
    assert upd[0].positions[0].isolated_wallet == pytest.approx(iw0 - 0.1)


def test_short_receives_positive_funding_and_flat_pays_nothing() -> None:
    rates = np.full(40, 0.001)
    e = make([flat(50.0)] * 40, funding=rates)
    e.process_bar(SYM, 0)  # bar 0 is a settlement time but there is no position yet
    e.market_order(SYM, SELL, 2.0)
    for i in range(1, 40):
        e.process_bar(SYM, i)
    rows = e.income_history(SYM, income_types=("FUNDING_FEE",))
    assert len(rows) == 1 and rows[0].income == pytest.approx(2.0 * 50.0 * 0.001)


def test_funding_charges_only_what_was_open_at_the_settlement_stamp() -> None:
    """Hostile mode moves exchange time inside a candle: a position opened 10 s after the 08:00
    settlement pays nothing for it; one closed 10 s after it pays it (Binance's rule)."""
    n = 70
    rates = np.full(n, 0.001)
    e = make([flat(100.0)] * n, funding=rates)
    for i in range(31):
        e.process_bar(SYM, i)  # bar 32 opens at 08:00
    e.advance_time(T0 + 32 * BAR + 10_000)  # 08:00:10, before bar 32 is processed
    e.market_order(SYM, BUY, 3.0)
    e.process_bar(SYM, 32)
    assert e.income_history(SYM, income_types=("FUNDING_FEE",)) == []
    for i in range(33, 64):
        e.process_bar(SYM, i)  # bar 64 opens at 16:00
    e.advance_time(T0 + 64 * BAR + 10_000)
    e.market_order(SYM, SELL, 3.0)
    after_close = e.balance()
    e.process_bar(SYM, 64)
    rows = e.income_history(SYM, income_types=("FUNDING_FEE",))
    assert [r.time_ms for r in rows] == [T0 + 64 * BAR]
    assert rows[0].income == pytest.approx(-3.0 * 100.0 * 0.001)
    assert e.balance() == pytest.approx(after_close - 0.3)
    assert e.position(SYM) is None


# ====================================================================== candle scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    bars: list[Bar]  # bar 0 closes at 100; the entry fills at open[1]
    side: Side
    sl: float
    tp: float
    expected: tuple[str, float, int]  # (SL | TP | LIQ, fill price, bar index)
    path: str = "pessimistic"
    lev: int = 10


SCENARIOS = [
    Scenario("long SL hit", [flat(), (100, 101, 97.5, 99), flat(99)], Side.LONG, 98, 103, ("SL", 98, 1)),
    Scenario("long TP hit", [flat(), (100, 103.5, 99.5, 103), flat(103)], Side.LONG, 98, 103, ("TP", 103, 1)),
    Scenario(
        "long both, pessimistic -> SL", [flat(), (100, 104, 97, 103)], Side.LONG, 98, 103, ("SL", 98, 1)
    ),
    Scenario(
        "long both, down bar, pessimistic -> SL",
        [flat(), (100, 104, 97, 99)],
        Side.LONG,
        98,
        103,
        ("SL", 98, 1),
    ),
    Scenario(
        "long both, up bar, ohlc O-L-H-C -> SL",
        [flat(), (100, 104, 97, 103)],
        Side.LONG,
        98,
        103,
        ("SL", 98, 1),
        path="ohlc",
    ),
    Scenario(
        "long both, down bar, ohlc O-H-L-C -> TP",
        [flat(), (100, 104, 97, 99)],
        Side.LONG,
        98,
        103,
        ("TP", 103, 1),
        path="ohlc",
    ),
    Scenario(
        "long gap through the stop fills at the open",
        [flat(), (100, 100.5, 99.5, 100), (96, 97, 95, 96.5)],
        Side.LONG,
        98,
        103,
        ("SL", 96, 2),
    ),
    Scenario(
        "long gap through the TP fills at the open",
        [flat(), (100, 100.5, 99.5, 100), (105, 106, 104.5, 105.5)],
        Side.LONG,
        98,
        103,
        ("TP", 105, 2),
    ),
    Scenario("short SL hit", [flat(), (100, 102.5, 99, 101)], Side.SHORT, 102, 97, ("SL", 102, 1)),
    Scenario(
        "short both, pessimistic -> SL", [flat(), (100, 102.5, 96.5, 97)], Side.SHORT, 102, 97, ("SL", 102, 1)
    ),
    Scenario(
        "short both, up bar, ohlc O-L-H-C -> TP",
        [flat(), (100, 102.5, 96.5, 101)],
        Side.SHORT,
        102,
        97,
        ("TP", 97, 1),
        path="ohlc",
    ),
    Scenario(
        "short gap through the stop",
        [flat(), flat(), (104, 105, 103, 104)],
        Side.SHORT,
        102,
        97,
        ("SL", 104, 2),
    ),
    # 50x long from 100: iw = 2/unit, LP = 98/0.995 = 98.4925; the stop at 97 lies beyond LP.
    Scenario(
        "liquidation before a stop beyond LP",
        [flat(), (100, 100.2, 96, 97.5)],
        Side.LONG,
        97,
        103,
        ("LIQ", 98 / 0.995, 1),
        lev=50,
    ),
    # Same position, stop at 99 between the open and LP: the stop wins.
    Scenario(
        "stop between open and LP fills first",
        [flat(), (100, 100.2, 96, 97.5)],
        Side.LONG,
        99,
        103,
        ("SL", 99, 1),
        lev=50,
    ),
    # Gap from 100 to 95 passes the stop (99) before LP (98.49): the stop fills at the open.
    Scenario(
        "gap through stop and LP: stop nearer the previous close wins",
        [flat(), flat(), (95, 95.5, 94, 95)],
        Side.LONG,
        99,
        103,
        ("SL", 95, 2),
        lev=50,
    ),
    # Short 50x: LP = 102/1.005 = 101.4925, big adverse bar, stop at 103 beyond LP.
    Scenario(
        "short liquidation",
        [flat(), (100, 104, 99.8, 103)],
        Side.SHORT,
        103,
        97,
        ("LIQ", 102 / 1.005, 1),
        lev=50,
    ),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_candle_scenarios(sc: Scenario) -> None:
    bars = [tuple(float(x) for x in b) for b in sc.bars]
    e = make(bars, SimSettings(slippage_bps=0.0, intrabar_path=sc.path))  # type: ignore[arg-type]
    sl_id, tp_id = open_long(e, qty=10.0, lev=sc.lev, sl=sc.sl, tp=sc.tp, side=sc.side)
    entry = e.fills(SYM)[0].price
    assert entry == 100.0
    kind, price, bar = sc.expected
    for i in range(1, len(bars)):
        e.process_bar(SYM, i)
        ev = e.pop_events()
        closes = [t for t in trades(ev) if t.reduce_only]
        if i < bar:
            assert closes == [], f"closed early at bar {i}"
            continue
        if i > bar:
            break
        assert len(closes) == 1
        t = closes[0]
        assert t.last_filled_price == pytest.approx(price)
        assert t.status is OrderStatus.FILLED
        assert t.trade_time_ms == T0 + (bar + 1) * BAR  # stamped at the bar's close
        fired = {a.algo_id: a.status for a in algos(ev)}
        if kind == "LIQ":
            assert t.execution_type == "CALCULATED" and t.order_type is OrderType.LIQUIDATION
            assert t.client_order_id.startswith("autoclose-")
            # the stop is crossed later in the same bar with no position left: rejected
            assert fired.get(sl_id) is AlgoStatus.REJECTED
        else:
            winner, loser = (sl_id, tp_id) if kind == "SL" else (tp_id, sl_id)
            assert fired[winner] is AlgoStatus.FINISHED
            assert t.order_type is OrderType.MARKET and t.original_type is OrderType.MARKET
            assert loser not in fired or fired[loser] is AlgoStatus.REJECTED
        assert e.position(SYM) is None
        sign = sc.side.sign
        assert t.realized_pnl == pytest.approx(sign * (price - 100.0) * 10.0)


def test_liquidation_loses_the_isolated_margin() -> None:
    e = make([flat(), (100, 100.2, 96, 97.5), flat(97.5)])
    open_long(e, qty=10.0, lev=50, sl=None, tp=None)
    pos = e.position(SYM)
    assert pos is not None
    assert pos.liquidation_price == pytest.approx(98 / 0.995)
    iw = pos.isolated_margin
    assert iw == pytest.approx(20.0)
    wallet = e.balance()
    e.process_bar(SYM, 1)
    ev = e.pop_events()
    assert shape(ev) == ["OTU:CALCULATED:FILLED", "ACC:ORDER", "ACC:INSURANCE_CLEAR"]
    assert e.balance() == pytest.approx(wallet - iw)  # defaults: the whole margin is gone
    types = [r.income_type for r in e.income_history(SYM, start_ms=e.now_ms)]
    assert types == ["REALIZED_PNL", "INSURANCE_CLEAR"]
    assert e.position(SYM) is None


def test_liquidation_price_formula_isolated() -> None:
    e = make([flat(), flat()])
    e.process_bar(SYM, 0)
    e.set_leverage(SYM, 10)
    e.market_order(SYM, BUY, 10.0)
    assert e.position(SYM).liquidation_price == pytest.approx((1000 - 100) / (10 * 0.995))  # type: ignore[union-attr]
    e.market_order(SYM, SELL, 20.0)  # flip to a 10-unit short
    assert e.position(SYM).liquidation_price == pytest.approx((1000 + 100) / (10 * 1.005))  # type: ignore[union-attr]


def test_one_x_long_is_never_liquidated() -> None:
    e = make([flat(), (100, 100, 1, 2)])
    open_long(e, qty=1.0, lev=1, sl=None, tp=None)
    e.process_bar(SYM, 1)
    assert e.position(SYM) is not None


# ====================================================================== algo book and reporting


def test_triggered_stop_reports_market_with_new_id_and_sibling_survives() -> None:
    bars = [flat(), (100, 100.5, 97, 99), flat(99), (99, 104, 98.5, 103)]
    e = make(bars)
    sl_id, tp_id = open_long(e)
    e.process_bar(SYM, 1)
    ev = e.pop_events()
    assert shape(ev) == ["ALGO:TRIGGERED", "OTU:NEW:NEW", "OTU:TRADE:FILLED", "ACC:ORDER", "ALGO:FINISHED"]
    trig, new, fill, acc, fin = ev
    assert isinstance(trig, AlgoUpdate) and isinstance(fin, AlgoUpdate)
    assert isinstance(new, OrderTradeUpdate) and isinstance(fill, OrderTradeUpdate)
    assert isinstance(acc, AccountUpdate)
    assert trig.algo_id == sl_id and trig.triggered_order_id == fill.order_id == fin.triggered_order_id
    assert fill.order_id != sl_id
    assert (fill.order_type, fill.original_type) == (OrderType.MARKET, OrderType.MARKET)
    assert fill.reduce_only and fill.side is SELL
    assert acc.positions[0].position_amount == 0.0
    # The exchange did not cancel the take-profit.
    assert [a.algo_id for a in e.open_algo_orders(SYM)] == [tp_id]
    e.process_bar(SYM, 2)
    e.process_bar(SYM, 3)  # crosses the orphan TP while flat: rejected, nothing trades
    ev = e.pop_events()
    assert shape(ev) == ["ALGO:REJECTED"] and ev[0].algo_id == tp_id  # type: ignore[union-attr]
    assert e.open_algo_orders(SYM) == []


def test_report_original_type_setting() -> None:
    e = make([flat(), (100, 103.5, 99.5, 103)], SimSettings(slippage_bps=0.0, report_original_type=True))
    open_long(e)
    e.process_bar(SYM, 1)
    fill = trades(e.pop_events())[0]
    assert (fill.order_type, fill.original_type) == (OrderType.MARKET, OrderType.TAKE_PROFIT_MARKET)


def test_triggered_fill_slippage_is_adverse() -> None:
    e = make([flat(), (100, 101, 97, 99)], SimSettings(slippage_bps=10.0))
    open_long(e, sl=98.0)
    e.process_bar(SYM, 1)
    assert trades(e.pop_events())[0].last_filled_price == pytest.approx(98.0 * 0.999)


def test_algo_ids_are_separate_from_order_ids_and_cancel_all_leaves_them() -> None:
    e = make([flat(), flat(), flat()])
    sl_id, tp_id = open_long(e)
    order_ids = {f.order_id for f in e.fills()}
    assert sl_id not in order_ids and tp_id not in order_ids
    assert e.open_orders(SYM) == []  # algo orders are not listed with normal orders
    assert e.cancel_all_orders(SYM) == 0
    assert {a.algo_id for a in e.open_algo_orders(SYM)} == {sl_id, tp_id}
    assert e.pop_events() == []  # normal cancel-all produced nothing
    e.cancel_algo(SYM, sl_id)
    assert code(e.cancel_algo, SYM, sl_id) == E.UNKNOWN_ORDER
    assert e.cancel_all_algo(SYM) == 1
    ev = algos(e.pop_events())
    assert [(a.algo_id, a.status) for a in ev] == [(sl_id, AlgoStatus.CANCELED), (tp_id, AlgoStatus.CANCELED)]
    assert e.open_algo_orders(SYM) == []


def test_algo_placement_event_and_listing() -> None:
    e = make([flat(), flat()])
    e.process_bar(SYM, 0)
    c = e.place_algo(SYM, STOP, SELL, 1.0, 95.0, client_algo_id="sl-1")
    ev = e.pop_events()
    assert shape(ev) == ["ALGO:NEW"]
    a = ev[0]
    assert isinstance(a, AlgoUpdate)
    assert (a.algo_id, a.client_algo_id, a.trigger_price, a.reduce_only) == (c.algo_id, "sl-1", 95.0, True)
    listed = e.open_algo_orders(SYM)[0]
    assert listed == c and listed.status is AlgoStatus.NEW and listed.time_ms == e.now_ms


def test_market_order_event_sequence_and_times() -> None:
    e = make([flat(), flat(), flat()])
    e.process_bar(SYM, 0)
    e.market_order(SYM, BUY, 1.0, client_order_id="entry-1")
    e.process_bar(SYM, 1)
    r = e.market_order(SYM, SELL, 1.0, reduce_only=True, client_order_id="close-1")
    ev = e.pop_events()
    assert shape(ev) == ["OTU:NEW:NEW", "OTU:TRADE:FILLED", "ACC:ORDER"] * 2
    close_new, close_fill, close_acc = ev[3:]
    assert isinstance(close_fill, OrderTradeUpdate)
    assert close_fill.order_id == r.order_id and close_fill.client_order_id == "close-1"
    assert close_fill.reduce_only and close_fill.original_type is OrderType.MARKET
    assert close_fill.avg_price == r.avg_price
    assert all(x.event_time_ms == T0 + 2 * BAR for x in (close_new, close_fill, close_acc))
    assert ev[0].event_time_ms == T0 + BAR


def test_non_reduce_only_conditional_opens_a_position() -> None:
    e = make([flat(), (100, 105, 99.5, 104)])
    e.process_bar(SYM, 0)
    e.place_algo(SYM, STOP, BUY, 1.0, 102.0, reduce_only=False)
    e.process_bar(SYM, 1)
    pos = e.position(SYM)
    assert pos is not None and pos.side is Side.LONG and pos.entry_price == 102.0


def test_clock_and_order_of_bars() -> None:
    e = make([flat()] * 3)
    assert e.now_ms == T0
    e.process_bar(SYM, 0)
    assert e.now_ms == T0 + BAR
    with pytest.raises(ValueError):
        e.process_bar(SYM, 0)
    with pytest.raises(ValueError):
        e.process_bar(SYM, 3)
    e.process_bar(SYM, 2)  # skipping ahead is allowed (e.g. a --from date)
    assert e.now_ms == T0 + 3 * BAR
    assert e.last_price(SYM) == 100.0


def test_multi_symbol_time_is_monotonic() -> None:
    e = MatchingEngine(EXACT, {"A": replace(FILT, symbol="A"), "B": replace(FILT, symbol="B")})
    t = T0 + np.arange(3, dtype=np.int64) * BAR
    p = np.full(3, 100.0)
    e.add_bars("A", t, p, p, p, p)
    e.add_bars("B", t, p, p, p, p)
    e.process_bar("A", 0)
    e.process_bar("B", 0)
    assert e.now_ms == T0 + BAR
    e.process_bar("A", 1)
    assert e.now_ms == T0 + 2 * BAR


def test_input_arrays_are_not_copied_and_are_read_only() -> None:
    t = T0 + np.arange(3, dtype=np.int64) * BAR
    o = np.full(3, 100.0)
    e = MatchingEngine(EXACT, {SYM: FILT})
    e.add_bars(SYM, t, o, o, o, o)
    view = e.bars(SYM)["open"]
    assert np.shares_memory(view, o)
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        e.add_bars(SYM, t, o, o, o, o[:2])


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        SimSettings(intrabar_path="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SimSettings(taker_fee=-0.1)


# ====================================================================== determinism


def script(settings: SimSettings = EXACT) -> list[ExchangeEvent]:
    rng = np.random.default_rng(7)
    n = 400
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    o = np.r_[100.0, c[:-1]]
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.004, n))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.004, n))
    fr = rng.normal(0, 0.0002, n)
    e = MatchingEngine(settings, {SYM: FILT})
    e.add_bars(SYM, T0 + np.arange(n, dtype=np.int64) * BAR, o, h, lo, c, fr)
    events: list[ExchangeEvent] = []
    for i in range(n):
        e.process_bar(SYM, i)
        if e.position(SYM) is None and i % 7 == 0 and i + 1 < n:
            e.cancel_all_algo(SYM)
            side = Side.LONG if i % 2 else Side.SHORT
            e.set_leverage(SYM, 25)
            e.market_order(SYM, side.entry_order_side, 3.0)
            px = e.last_price(SYM)
            k = 1 if side is Side.LONG else -1
            e.place_algo(SYM, STOP, side.exit_order_side, 3.0, round(px * (1 - k * 0.01), 2))
            e.place_algo(SYM, TP, side.exit_order_side, 3.0, round(px * (1 + k * 0.015), 2))
        events.extend(e.pop_events())
    return events


def test_same_script_twice_gives_identical_events() -> None:
    a, b = script(), script()
    assert len(a) > 50
    assert a == b
    kinds = set(shape(a))
    assert {"ALGO:TRIGGERED", "ALGO:FINISHED", "ACC:FUNDING_FEE", "ALGO:CANCELED"} <= kinds
    times = [x.event_time_ms for x in a]
    assert times == sorted(times)
    c = script(SimSettings(slippage_bps=5.0, max_fill_qty_per_execution=1.0))
    assert c != a and c == script(SimSettings(slippage_bps=5.0, max_fill_qty_per_execution=1.0))


def test_funding_charges_the_settled_rate_when_the_recording_shows_it_one_row_late() -> None:
    # Forward-filled column, the 08:00 rate first appears on the 08:15 row (defect 19).
    n = 40
    rates = np.full(n, 0.0001)
    rates[33:] = -0.0003
    e = make([flat(100.0)] * n, funding=rates)
    e.process_bar(SYM, 0)
    e.set_leverage(SYM, 10)
    e.market_order(SYM, BUY, 10.0)
    for i in range(1, n):
        e.process_bar(SYM, i)
    (row,) = e.income_history(SYM, income_types=("FUNDING_FEE",))
    assert row.time_ms == T0 + 8 * 3600_000
    assert round(row.income, 10) == 0.3  # the settled -0.03 %: the long receives, not pays 0.01 %


def test_an_explicit_funding_convention_is_obeyed() -> None:
    n = 40
    rates = np.full(n, 0.0001)
    rates[33:] = -0.0003
    arr = np.asarray([flat(100.0)] * n)
    e = MatchingEngine(EXACT, {SYM: FILT})
    t = T0 + np.arange(n, dtype=np.int64) * BAR
    e.add_bars(SYM, t, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], rates, funding_convention="settlement_row")
    e.process_bar(SYM, 0)
    e.set_leverage(SYM, 10)
    e.market_order(SYM, BUY, 10.0)
    for i in range(1, n):
        e.process_bar(SYM, i)
    (row,) = e.income_history(SYM, income_types=("FUNDING_FEE",))
    assert round(row.income, 10) == -0.1  # told the row is the settled rate: the row's own value


def test_quiet_only_when_no_bar_can_touch_the_book() -> None:
    # Skip-ahead (issue 13): a quiet book is one where processing a bar only moves its index.
    e = make([flat(100.0)] * 6)
    assert e.quiet(SYM)
    e.process_bar(SYM, 0)
    e.set_leverage(SYM, 10)
    e.market_order(SYM, BUY, 1.0)
    assert not e.quiet(SYM)  # a position: funding and liquidation can happen
    e.process_bar(SYM, 1)
    e.market_order(SYM, SELL, 1.0, reduce_only=True)
    assert e.position(SYM) is None and e.quiet(SYM)
    algo = e.place_algo(SYM, STOP, SELL, 1.0, 90.0)
    assert not e.quiet(SYM)  # a resting trigger order, even while flat
    e.cancel_algo(SYM, algo.algo_id)
    assert e.quiet(SYM)
    e.process_bar(SYM, 4)  # a gap over quiet bars is accepted
    assert e.bar_index(SYM) == 4
