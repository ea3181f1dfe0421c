"""Close detection from ``ORDER_TRADE_UPDATE`` executions (SPEC §10, §13 rows 3, 7, 9, 10, 11).

Why aggregate per order id: one MARKET order can fill in several executions (PARTIALLY_FILLED …
FILLED), each carrying only *its own* realised PnL (``rp``) and commission (``n``); the design
point read the last event only and under-reported PnL. Here executions are summed per order id and
one result is emitted once, on FILLED.

What is a close: reduce-only, or an original type STOP_MARKET / TAKE_PROFIT_MARKET, or a
liquidation, or an order id the bot announced (``expect_close``: the matching-engine order created
when one of its algo orders triggered). The design point's ``rp ≠ 0`` rule is gone: an entry that
shrinks an opposite position can carry a small ``rp``. Everything else with a fill is an *entry*,
tracked too because the entry commission belongs in the trade's net PnL.

``ap == 0`` on the final report → skipped with a warning (an exit price of 0 yields absurd PnL);
reconciliation against the exchange closes the position instead (SPEC §13 row 11).
Duplicates (the same trade id twice, or any report of an order already emitted) are ignored, so a
redelivered event never produces a second trade (SPEC §13 row 7).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TypeVar

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import OrderSide, OrderStatus, OrderType

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

_FILL_EXECUTIONS = frozenset({"TRADE", "CALCULATED"})
_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED})
_CLOSE_TYPES = frozenset({OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET, OrderType.LIQUIDATION})


@dataclass(frozen=True, slots=True)
class CloseFill:
    """All executions of one closing order, summed."""

    order_id: int
    qty: float
    avg_price: float
    realized_pnl_sum: float
    commission_sum: float
    original_type: OrderType
    reduce_only: bool
    time_ms: int
    side: OrderSide = OrderSide.SELL
    order_type: OrderType = OrderType.MARKET
    client_order_id: str = ""
    complete: bool = True  # False: the order ended CANCELED/EXPIRED after a partial fill
    liquidation: bool = False
    trade_ids: tuple[int, ...] = ()  # the executions summed (reconciliation must not count them twice)


@dataclass(frozen=True, slots=True)
class EntryFill:
    """All executions of one opening order, summed (its commission is the trade's entry fee)."""

    order_id: int
    qty: float
    avg_price: float
    realized_pnl_sum: float
    commission_sum: float
    side: OrderSide
    time_ms: int
    client_order_id: str = ""
    complete: bool = True


@dataclass(slots=True)
class _Acc:
    qty: float = 0.0
    notional: float = 0.0
    rp: float = 0.0
    fee: float = 0.0
    trade_ids: set[int] = field(default_factory=set)


def bounded_put(store: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    """Insert and evict the oldest entries beyond ``limit`` (memory stays bounded in long runs)."""
    store[key] = value
    if len(store) > limit:
        store.popitem(last=False)


def _is_liquidation(ev: OrderTradeUpdate) -> bool:
    return (
        ev.order_type is OrderType.LIQUIDATION
        or ev.original_type is OrderType.LIQUIDATION
        or ev.execution_type == "CALCULATED"
        or ev.client_order_id.startswith("autoclose-")
    )


class CloseTracker:
    """Per-symbol aggregator; feed it every ``OrderTradeUpdate`` of the symbol in stream order."""

    def __init__(self, symbol: str = "", *, remember: int = 1024) -> None:
        self.symbol = symbol
        self._acc: dict[int, _Acc] = {}
        self._done: OrderedDict[int, None] = OrderedDict()  # emitted/skipped order ids (bounded)
        self._entries: OrderedDict[int, EntryFill] = OrderedDict()
        self._expected: OrderedDict[int, None] = OrderedDict()
        self._remember = remember

    def expect_close(self, order_id: int) -> None:
        """Mark a matching-engine order id as closing (e.g. from ``ALGO_UPDATE``'s triggered id)."""
        if order_id:
            bounded_put(self._expected, order_id, None, self._remember)

    def is_close(self, ev: OrderTradeUpdate) -> bool:
        """SPEC §13 row 10: reduce-only or original type SL/TP (no ``rp ≠ 0`` rule)."""
        return (
            ev.reduce_only
            or ev.original_type in _CLOSE_TYPES
            or ev.order_type in _CLOSE_TYPES
            or ev.order_id in self._expected
            or _is_liquidation(ev)
        )

    def entry_fill(self, order_id: int) -> EntryFill | None:
        """The aggregated fill of an entry order, once complete."""
        return self._entries.get(order_id)

    def on_update(self, ev: OrderTradeUpdate) -> CloseFill | EntryFill | None:
        """Account one execution report; returns the aggregate when the order is complete."""
        oid = ev.order_id
        if oid in self._done:
            return None
        acc = self._acc.get(oid)
        if ev.execution_type in _FILL_EXECUTIONS and ev.last_filled_qty > 0:
            if acc is None:
                acc = self._acc[oid] = _Acc()
            if ev.trade_id in acc.trade_ids:
                log.debug("%s: duplicate execution %s of order %s ignored", ev.symbol, ev.trade_id, oid)
                return None
            acc.trade_ids.add(ev.trade_id)
            acc.qty += ev.last_filled_qty
            acc.notional += ev.last_filled_qty * ev.last_filled_price
            acc.rp += ev.realized_pnl
            acc.fee += ev.commission
        if ev.status not in _TERMINAL or acc is None:
            return None
        del self._acc[oid]
        bounded_put(self._done, oid, None, self._remember)
        complete = ev.status is OrderStatus.FILLED
        if self.is_close(ev):
            if ev.avg_price <= 0:
                log.warning(
                    "%s: close fill of order %s reports average price 0; skipped "
                    "(reconciliation will close the position)",
                    ev.symbol,
                    oid,
                )
                return None
            return CloseFill(
                order_id=oid,
                qty=acc.qty,
                avg_price=ev.avg_price,
                realized_pnl_sum=acc.rp,
                commission_sum=acc.fee,
                original_type=ev.original_type,
                reduce_only=ev.reduce_only,
                time_ms=ev.trade_time_ms or ev.event_time_ms,
                side=ev.side,
                order_type=ev.order_type,
                client_order_id=ev.client_order_id,
                complete=complete,
                liquidation=_is_liquidation(ev),
                trade_ids=tuple(sorted(acc.trade_ids)),
            )
        avg = ev.avg_price if ev.avg_price > 0 else (acc.notional / acc.qty if acc.qty > 0 else 0.0)
        if avg <= 0:
            log.warning("%s: entry fill of order %s without a price; skipped", ev.symbol, oid)
            return None
        entry = EntryFill(
            order_id=oid,
            qty=acc.qty,
            avg_price=avg,
            realized_pnl_sum=acc.rp,
            commission_sum=acc.fee,
            side=ev.side,
            time_ms=ev.trade_time_ms or ev.event_time_ms,
            client_order_id=ev.client_order_id,
            complete=complete,
        )
        bounded_put(self._entries, oid, entry, self._remember)
        return entry
