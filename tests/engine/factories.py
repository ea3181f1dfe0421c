"""Builders for the engine tests' hand-written exchange events and trades.

Why one place: an ``ORDER_TRADE_UPDATE`` has nineteen fields and a closed trade twelve; written
out in every test they hide the two or three values a test is about. Each builder takes those as
keywords and fills the rest with neutral values (a SELL MARKET execution of XRPUSDT at T0).
"""

from __future__ import annotations

import numpy as np

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import ClosedTrade, CloseReason, OrderSide, OrderStatus, OrderType, Side
from perpbot.engine.context import CandleContext

SYM = "XRPUSDT"
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC (a funding time and a UTC midnight)
BAR = 15 * 60_000
MKT = OrderType.MARKET
OHLC = tuple[float, float, float, float]
# A candle from a close of 100 that touches a long's stop at 96 (100 − 2·ATR 2) and nothing else.
SL_BAR: OHLC = (100, 100.5, 95, 97)


def flat(p: float = 100.0, n: int = 1) -> list[OHLC]:
    """``n`` candles that never move from ``p``: nothing triggers on them."""
    return [(p, p, p, p)] * n


def ctx_at(i: int, close: float, signal: Side | None, atr: float = 2.0, symbol: str = SYM) -> CandleContext:
    """What a bot sees at the close of bar ``i`` (bar 0 opens at T0); features are irrelevant
    to the bot itself (only a model reads them)."""
    return CandleContext(
        symbol=symbol,
        open_time_ms=T0 + i * BAR,
        close=close,
        atr=atr,
        signal=signal,
        long_score=4,
        short_score=3,
        rsi=30.0,
        macd_hist=0.001,
        adx=30.0,
        vol_surge=True,
        features=np.zeros(26),
    )


def order_update(
    order_id: int,
    trade_id: int = 0,
    *,
    qty: float = 0.0,
    cum: float | None = None,
    total: float | None = None,
    price: float = 0.0,
    ap: float | None = None,
    rp: float = 0.0,
    fee: float = 0.0,
    reduce_only: bool = False,
    o: OrderType = MKT,
    ot: OrderType = MKT,
    x: str = "TRADE",
    status: OrderStatus | None = None,
    side: OrderSide = OrderSide.SELL,
    cid: str = "",
    symbol: str = SYM,
    t: int = T0,
) -> OrderTradeUpdate:
    """One execution report: ``qty`` is this execution (``l``), ``cum`` the order's running total
    (``z``, default ``qty``), ``total`` the order quantity (``q``, default ``cum``), ``price`` this
    execution's price (``L``) and ``ap`` the average (default ``price``). The status defaults to
    FILLED once ``cum`` reaches ``total``, else PARTIALLY_FILLED."""
    z = qty if cum is None else cum
    q = z if total is None else total
    if status is None:
        status = OrderStatus.FILLED if z >= q else OrderStatus.PARTIALLY_FILLED
    return OrderTradeUpdate(
        event_time_ms=t,
        symbol=symbol,
        order_id=order_id,
        client_order_id=cid,
        side=side,
        order_type=o,
        original_type=ot,
        execution_type=x,
        status=status,
        reduce_only=reduce_only,
        quantity=q,
        last_filled_qty=qty,
        cumulative_filled_qty=z,
        last_filled_price=price,
        avg_price=price if ap is None else ap,
        commission=fee,
        realized_pnl=rp,
        trade_id=trade_id,
        trade_time_ms=t,
    )


def closed_trade(
    net: float,
    *,
    symbol: str = SYM,
    side: Side = Side.LONG,
    entry_ms: int = T0,
    exit_ms: int = T0 + 1,
    price: float = 1.0,
    qty: float = 1.0,
    entry_fee: float = 0.0,
    exit_fee: float = 0.0,
    reason: CloseReason | None = None,
) -> ClosedTrade:
    """A round trip whose ``net_pnl`` is exactly ``net`` (realised PnL = net + fees); the reason
    defaults to SL for a loser and TP otherwise."""
    return ClosedTrade(
        symbol=symbol,
        side=side,
        entry_time_ms=entry_ms,
        exit_time_ms=exit_ms,
        entry_price=price,
        exit_price=price,
        quantity=qty,
        realized_pnl=net + entry_fee + exit_fee,
        entry_fee=entry_fee,
        exit_fee=exit_fee,
        funding=0.0,
        reason=reason or (CloseReason.SL if net < 0 else CloseReason.TP),
    )
