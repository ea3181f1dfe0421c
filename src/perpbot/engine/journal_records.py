"""What the journal's readers return: its rows as typed records (orders, events, kill-switch
state, closed trades); and the other way, the ``fills`` rows of executions.

Separate from ``journal.py`` because these are the journal's vocabulary for the rest of the bot
(``engine.unbooked`` reads ``OrderRecord`` rows, the kill switch its ``KillSwitchState``), and a
module that only reads records needs nothing of the SQLite machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import ClosedTrade, CloseReason, Side

if TYPE_CHECKING:  # bot_base imports the journal, which imports this module
    from perpbot.engine.bot_base import Execution


@dataclass(frozen=True, slots=True)
class KillSwitchState:
    """Persisted kill-switch state of one symbol."""

    symbol: str
    tripped: bool
    reason: str
    time_ms: int
    since_trade_id: int


@dataclass(frozen=True, slots=True)
class JournalEvent:
    id: int
    time_ms: int
    kind: str
    symbol: str
    message: str
    data: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One order request and (once known) its result."""

    id: int
    time_ms: int
    symbol: str
    kind: str
    client_id: str
    order_id: int | None
    algo_id: int | None
    order_type: str
    side: str
    qty: float
    trigger_price: float | None
    avg_price: float | None
    executed_qty: float | None
    status: str
    reason: str


def trade_from_row(row: tuple[Any, ...]) -> ClosedTrade:
    """A ``trades`` row selected with ``journal_schema.TRADE_COLS`` as a ``ClosedTrade``."""
    return ClosedTrade(
        symbol=row[1],
        side=Side(row[2]),
        entry_time_ms=row[3],
        exit_time_ms=row[4],
        entry_price=row[5],
        exit_price=row[6],
        quantity=row[7],
        realized_pnl=row[8],
        entry_fee=row[9],
        exit_fee=row[10],
        funding=row[11],
        reason=CloseReason(row[12]),
    )


def reported_fill_row(ev: OrderTradeUpdate) -> tuple[Any, ...]:
    """A ``fills`` row (``journal_schema.FILL_COLS``) of an execution report."""
    return (
        ev.trade_time_ms or ev.event_time_ms,
        ev.symbol,
        ev.order_id,
        ev.trade_id,
        ev.client_order_id,
        ev.side.value,
        ev.order_type.value,
        ev.original_type.value,
        ev.execution_type,
        ev.status.value,
        int(ev.reduce_only),
        ev.last_filled_price,
        ev.last_filled_qty,
        ev.cumulative_filled_qty,
        ev.avg_price,
        ev.commission,
        ev.realized_pnl,
    )


def rest_fill_row(symbol: str, ex: Execution) -> tuple[Any, ...]:
    """A ``fills`` row of an execution read from ``userTrades``: status ``REST`` (no report says
    the order's status), reduce-only unknown (0), no cumulative quantity or average price."""
    return (
        ex.time_ms,
        symbol,
        ex.order_id,
        ex.trade_id,
        ex.client_id,
        ex.side.value,
        ex.order_type.value,
        ex.original_type.value,
        "TRADE",
        "REST",
        0,
        ex.price,
        ex.qty,
        0.0,
        0.0,
        ex.commission,
        ex.realized_pnl,
    )
