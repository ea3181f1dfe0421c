"""Entries whose outcome is not known at once, and the start of every new position.

Why (issue 7 §2.3, defect 3): an entry can time out after the exchange executed it, be
acknowledged (``NEW``) and fill seconds later, or fill in part. Such an entry is resolved by its
client id before anything else; until it is resolved it stays registered with the risk manager
(so other bots keep to the limits), and a late fill is adopted, registered and protected like any
entry.
"""

from __future__ import annotations

import math

from perpbot.domain.types import OrderResult, OrderStatus, Side, SymbolFilters
from perpbot.engine.bot_base import (
    PROTECT_ATTEMPTS,
    PROTECT_RETRY_S,
    BotBase,
    EntryAcc,
    LocalPosition,
    log,
)
from perpbot.engine.context import CandleContext
from perpbot.engine.notifier import alert_message, entry_message
from perpbot.exchange.errors import NO_SUCH_ORDER, ExchangeError

_OPEN = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


class PendingMixin(BotBase):
    """Pending-entry resolution and position start-up (see the module docstring)."""

    def _new_position(
        self, side: Side, qty: float, price: float, time_ms: int, order_id: int
    ) -> LocalPosition:
        """A position from its entry order, with the executions the stream already gave."""
        pos = LocalPosition(
            side=side,
            qty=qty,
            entry_price=price,
            entry_time_ms=time_ms,
            entry_order_id=order_id,
            entry_qty=qty,
        )
        acc = self._entry_acc.get(order_id)
        if acc is not None and acc.qty > 0:
            pos.entry_exec_qty, pos.entry_exec_fee = acc.qty, acc.fee
            pos.entry_trade_id = acc.max_trade_id
            if acc.qty > qty + self._tol():  # the stream saw more than the answer said
                pos.qty = pos.entry_qty = acc.qty
                pos.entry_price = acc.avg_price
        return pos

    async def _announce_and_protect(
        self, pos: LocalPosition, atr: float, filters: SymbolFilters, ctx: CandleContext | None
    ) -> None:
        sl, tp = self._stops(pos.entry_price, atr, pos.side, filters)
        pos.sl_price, pos.tp_price = sl, tp
        log.info(
            "ENTRY %s %s price=%.6f qty=%s sl=%.6f tp=%.6f leverage=%dx",
            self.symbol,
            pos.side.value,
            pos.entry_price,
            pos.qty,
            sl,
            tp,
            self._leverage,
        )
        await self._notifier.notify(
            "entry",
            entry_message(
                self.symbol,
                pos.side,
                entry_price=pos.entry_price,
                qty=pos.qty,
                leverage=self._leverage,
                sl=sl,
                tp=tp,
                rsi=ctx.rsi if ctx is not None else float("nan"),
                macd_hist=ctx.macd_hist if ctx is not None else float("nan"),
                atr=atr,
            ),
        )
        await self._protect(pos, want_sl=True, want_tp=True)
        if self._pos is pos and not pos.booked and pos.entry_exec_qty < pos.entry_qty - self._tol():
            # Which executions the answer's quantity is made of (by trade id), so that a later
            # execution of the same order is told apart from one already counted. Read after the
            # stops are out: it is bookkeeping, and a slow or failing read (retried with
            # back-off) must not keep the position unprotected.
            await self._entry_from_rest(pos)
        if self._pos is pos and not pos.booked:
            await self._ensure_protection(pos)  # fills that arrived meanwhile are covered too

    async def _order_by_cid(self, cid: str) -> OrderResult | None:
        """What happened to the order with client id ``cid``: its status, or a zero-fill
        REJECTED when the exchange does not know it (it never arrived); None when the exchange
        cannot tell us (every attempt failed)."""
        ex = self._ex
        for attempt in range(PROTECT_ATTEMPTS):
            try:
                o = await ex.get_order(self.symbol, client_order_id=cid)
            except ExchangeError as exc:
                if exc.code == NO_SUCH_ORDER:
                    return OrderResult(0, OrderStatus.REJECTED, 0.0, 0.0)
                log.warning("%s: order query by client id %s failed: %s", self.symbol, cid, exc)
                await self._clock.sleep(PROTECT_RETRY_S * 2**attempt)
                continue
            return OrderResult(o.order_id, o.status, o.executed_qty, o.avg_price)
        return None

    async def _keep_pending(self, why: str) -> None:
        """The entry may still fill: registered with the risk manager until it is resolved."""
        p = self._pending
        if p is None:
            return
        await self._risk.register(self.symbol, p.side)
        msg = f"{why}: client id {p.client_id} kept pending (registered; resolved by id)"
        log.warning("%s: %s", self.symbol, msg)
        self._journal.record_event(self._clock.now_ms(), "entry_pending", self.symbol, msg)
        await self._notifier.notify("alert", alert_message(self.symbol, msg))

    async def _late_entry(self) -> None:
        """A pending entry's fills arrived on the stream: resolve it once the bot is idle."""
        await self._idle.wait()
        await self._resolve_pending()

    async def _resolve_pending(self) -> None:
        """Resolve the pending entry by its order / client id: adopt what filled, release the
        registration when nothing did."""
        p = self._pending
        ex = self._ex
        if p is None or self._pos is not None:
            return
        try:
            if p.order_id:
                o = await self._retry(lambda: ex.get_order(self.symbol, order_id=p.order_id))
            else:
                o = await self._retry(lambda: ex.get_order(self.symbol, client_order_id=p.client_id))
        except ExchangeError as exc:
            if exc.code != NO_SUCH_ORDER:
                log.warning("%s: pending entry query failed: %s", self.symbol, exc)
                return
            if self._pending is not p or self._pos is not None:
                # Resolved meanwhile (its fills came and were adopted while this query was out):
                # this "does not exist" is older than that, and releasing would free the
                # registry's slot of a live position (found by review, 2026-12-03).
                return
            self._pending = None
            await self._risk.close(self.symbol, 0.0)
            if p.journal_row:
                self._journal.record_order_result(
                    p.journal_row,
                    time_ms=self._clock.now_ms(),
                    status="REJECTED",
                    reason="unknown to the exchange",
                )
            self._journal.record_event(
                self._clock.now_ms(), "entry_resolved", self.symbol, f"{p.client_id}: unknown to the exchange"
            )
            return
        if self._pending is not p or self._pos is not None:
            return
        if any(r.entry_order_id == o.order_id for r in self._recent):
            self._pending = None  # a position already took this order's fills (and was closed)
            return
        p.order_id = o.order_id
        if p.journal_row:  # the outcome, as soon as it is known
            self._journal.record_order_result(
                p.journal_row,
                time_ms=self._clock.now_ms(),
                status=o.status.value,
                order_id=o.order_id,
                avg_price=o.avg_price,
                executed_qty=o.executed_qty,
            )
        if o.executed_qty <= 0:
            if o.status not in _OPEN:
                self._pending = None
                await self._risk.close(self.symbol, 0.0)
                self._journal.record_event(
                    self._clock.now_ms(),
                    "entry_resolved",
                    self.symbol,
                    f"{p.client_id}: {o.status.value}, no fill",
                )
            return
        if o.status not in _OPEN:
            self._pending = None
        self._entry_acc.setdefault(o.order_id, EntryAcc())
        pos = self._new_position(p.side, o.executed_qty, o.avg_price, p.time_ms, o.order_id)
        self._pos = pos
        await self._risk.register(self.symbol, p.side)
        try:
            flat = await ex.position(self.symbol) is None
        except ExchangeError:
            flat = False  # unknown: protect it (fail closed)
        if flat:  # filled and already closed by someone else: book it from REST
            await self._sync_close("late entry fill, position already flat")
            return
        msg = f"late entry fill adopted: {pos.qty} @ {pos.entry_price} (order {o.order_id})"
        log.warning("%s: %s", self.symbol, msg)
        self._journal.record_event(self._clock.now_ms(), "entry_resolved", self.symbol, msg)
        filters = await self._symbol_filters()
        atr = p.atr if math.isfinite(p.atr) and p.atr > 0 else float("nan")
        self._busy = True
        try:
            await self._announce_and_protect(pos, atr, filters, None)
        finally:
            self._busy = False
