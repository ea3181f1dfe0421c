"""Domain objects shared by every mode (backtest, paper, live). They know nothing about I/O.

Vocabulary follows Binance USDT-M: an *order* lives in the matching engine and has an
``order_id``; a *conditional (algo) order* (STOP_MARKET / TAKE_PROFIT_MARKET) lives in the
separate algo-order service with its own ``algo_id`` (since 2025-12-09). When it triggers, the
matching engine creates a new MARKET order with a new ``order_id``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Side(enum.Enum):
    """Position direction."""

    LONG = "LONG"
    SHORT = "SHORT"

    @property
    def opposite(self) -> Side:
        return Side.SHORT if self is Side.LONG else Side.LONG

    @property
    def entry_order_side(self) -> OrderSide:
        return OrderSide.BUY if self is Side.LONG else OrderSide.SELL

    @property
    def exit_order_side(self) -> OrderSide:
        return OrderSide.SELL if self is Side.LONG else OrderSide.BUY

    @property
    def sign(self) -> int:
        return 1 if self is Side.LONG else -1


class OrderSide(enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP_MARKET = "STOP_MARKET"
    TAKE_PROFIT_MARKET = "TAKE_PROFIT_MARKET"
    LIQUIDATION = "LIQUIDATION"

    @property
    def is_conditional(self) -> bool:
        return self in (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET)


class OrderStatus(enum.Enum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"
    REJECTED = "REJECTED"


class AlgoStatus(enum.Enum):
    """Lifecycle of a conditional order in Binance's algo service."""

    NEW = "NEW"
    CANCELED = "CANCELED"
    TRIGGERING = "TRIGGERING"
    TRIGGERED = "TRIGGERED"
    FINISHED = "FINISHED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class CloseReason(enum.Enum):
    """Why a position ended. SYNC = found flat by reconciliation (SPEC §13 row 5)."""

    TP = "TP"
    SL = "SL"
    REVERSE = "REVERSE"
    MANUAL = "MANUAL"
    SYNC = "SYNC"
    LIQUIDATION = "LIQUIDATION"
    EMERGENCY = "EMERGENCY"
    END_OF_DATA = "END_OF_DATA"


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    """Exchange precision rules for one symbol (Binance PRICE_FILTER / LOT_SIZE / MIN_NOTIONAL)."""

    symbol: str
    tick_size: float
    step_size: float
    min_qty: float
    min_notional: float = 5.0
    max_qty: float = 1e12


@dataclass(frozen=True, slots=True)
class Order:
    """A normal (matching-engine) order as known to the client."""

    symbol: str
    order_id: int
    side: OrderSide
    type: OrderType
    quantity: float
    status: OrderStatus
    reduce_only: bool = False
    executed_qty: float = 0.0
    avg_price: float = 0.0
    client_order_id: str = ""
    time_ms: int = 0


@dataclass(frozen=True, slots=True)
class ConditionalOrder:
    """A conditional order in the algo service (STOP_MARKET / TAKE_PROFIT_MARKET)."""

    symbol: str
    algo_id: int
    side: OrderSide
    type: OrderType
    quantity: float
    trigger_price: float
    status: AlgoStatus
    reduce_only: bool = True
    client_algo_id: str = ""
    time_ms: int = 0
    # The matching-engine order created when it fired (Binance ``actualOrderId``); 0 before.
    triggered_order_id: int = 0


@dataclass(frozen=True, slots=True)
class OrderResult:
    """What the REST call returns for a market order (RESULT response type)."""

    order_id: int
    status: OrderStatus
    executed_qty: float
    avg_price: float


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution (trade) of an order."""

    symbol: str
    order_id: int
    trade_id: int
    side: OrderSide
    price: float
    quantity: float
    commission: float
    realized_pnl: float
    time_ms: int
    is_maker: bool = False


@dataclass(frozen=True, slots=True)
class Position:
    """An open position as the exchange reports it (one-way mode: at most one per symbol)."""

    symbol: str
    side: Side
    quantity: float
    entry_price: float
    leverage: int = 1
    isolated_margin: float = 0.0
    unrealized_pnl: float = 0.0
    liquidation_price: float = 0.0


@dataclass(frozen=True, slots=True)
class Income:
    """One income-history row (REALIZED_PNL, COMMISSION, FUNDING_FEE, ...)."""

    symbol: str
    income_type: str
    income: float
    time_ms: int
    trade_id: str = ""


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A finished round trip, net of every cost; what reports, the journal and the kill switch read."""

    symbol: str
    side: Side
    entry_time_ms: int
    exit_time_ms: int
    entry_price: float
    exit_price: float
    quantity: float
    realized_pnl: float
    entry_fee: float
    exit_fee: float
    funding: float
    reason: CloseReason

    @property
    def fees(self) -> float:
        return self.entry_fee + self.exit_fee

    @property
    def net_pnl(self) -> float:
        """Realised PnL minus both commissions plus funding received (negative when paid)."""
        return self.realized_pnl - self.entry_fee - self.exit_fee + self.funding


@dataclass(slots=True)
class AccountState:
    """Wallet balance and positions, as the ACCOUNT_UPDATE stream or a REST snapshot gives them."""

    wallet_balance: float
    available_balance: float
    positions: dict[str, Position] = field(default_factory=dict)
