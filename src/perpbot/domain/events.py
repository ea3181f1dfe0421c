"""User-data-stream events, shaped like Binance USDT-M's so that one bot handles every mode.

The simulated exchange emits these directly; the live adapter parses Binance's JSON into them
(``ORDER_TRADE_UPDATE`` -> ``OrderTradeUpdate``, ``ALGO_UPDATE`` -> ``AlgoUpdate``,
``ACCOUNT_UPDATE`` -> ``AccountUpdate``). Field comments give the Binance key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from perpbot.domain.types import AlgoStatus, OrderSide, OrderStatus, OrderType


@dataclass(frozen=True, slots=True)
class OrderTradeUpdate:
    """``ORDER_TRADE_UPDATE``: one execution report of a normal order."""

    event_time_ms: int  # E
    symbol: str  # o.s
    order_id: int  # o.i
    client_order_id: str  # o.c
    side: OrderSide  # o.S
    order_type: OrderType  # o.o
    original_type: OrderType  # o.ot (live reports MARKET for triggered algo orders, SPEC §13 row 3)
    execution_type: str  # o.x: NEW, TRADE, CANCELED, EXPIRED, CALCULATED (liquidation)
    status: OrderStatus  # o.X
    reduce_only: bool  # o.R
    quantity: float  # o.q
    last_filled_qty: float  # o.l
    cumulative_filled_qty: float  # o.z
    last_filled_price: float  # o.L
    avg_price: float  # o.ap
    commission: float  # o.n (this execution's commission, positive = paid)
    realized_pnl: float  # o.rp (this execution's realised profit)
    trade_id: int  # o.t
    trade_time_ms: int  # o.T


@dataclass(frozen=True, slots=True)
class AlgoUpdate:
    """``ALGO_UPDATE``: a status change of a conditional order in the algo service."""

    event_time_ms: int  # E
    symbol: str  # o.s
    algo_id: int  # o.aid
    client_algo_id: str  # o.caid
    side: OrderSide  # o.S
    order_type: OrderType  # o.o
    status: AlgoStatus  # o.X
    quantity: float  # o.q
    trigger_price: float  # o.tp
    reduce_only: bool  # o.R
    triggered_order_id: int = 0  # o.ai: order id in the matching engine once triggered


@dataclass(frozen=True, slots=True)
class BalanceChange:
    asset: str  # a
    wallet_balance: float  # wb
    cross_wallet_balance: float  # cw
    balance_change: float  # bc (except PnL and commission)


@dataclass(frozen=True, slots=True)
class PositionChange:
    symbol: str  # s
    position_amount: float  # pa (signed)
    entry_price: float  # ep
    unrealized_pnl: float  # up
    margin_type: str  # mt
    isolated_wallet: float  # iw


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    """``ACCOUNT_UPDATE``: balance/position change with its reason (ORDER, FUNDING_FEE, ...)."""

    event_time_ms: int  # E
    reason: str  # a.m
    balances: tuple[BalanceChange, ...] = field(default_factory=tuple)  # a.B
    positions: tuple[PositionChange, ...] = field(default_factory=tuple)  # a.P


ExchangeEvent = OrderTradeUpdate | AlgoUpdate | AccountUpdate
