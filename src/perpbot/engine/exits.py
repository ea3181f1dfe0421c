"""Our own closes: a reduce-only MARKET close that counts as done only when the exchange confirms
it, and the SYNC close of a position the exchange shows flat.

Why confirmation (issue 7 §2.2, defects 2, 4, 7): a MARKET close can be acknowledged and fill
later, expire in part, time out after it executed, or fill with no stream event at all. The
position is booked when its executions sum to its quantity (``ledger``); if that does not happen
within ``CLOSE_WAIT_S``, the exchange is asked (position read, then ``userTrades`` and income
history) and, if the position is still open, the close is retried for what is left. An
unconfirmed close never cancels protection and never releases the position with PnL 0.
"""

from __future__ import annotations

import contextlib

from perpbot.domain.types import ClosedTrade, CloseReason, OrderStatus
from perpbot.engine.bot_base import (
    CLOSE_WAIT_S,
    REMEMBER,
    BotBase,
    LocalPosition,
    bounded_put,
    exec_key,
    income_key,
    is_transient,
    log,
)
from perpbot.engine.notifier import alert_message
from perpbot.exchange.errors import ExchangeError

CLOSE_ATTEMPTS = 3


class ExitMixin(BotBase):
    """Our reduce-only closes with confirmation, and SYNC closes (see the module docstring)."""

    async def _close_market(self, pos: LocalPosition, reason: CloseReason) -> bool:
        """Close ``pos`` (reduce-only MARKET) until the exchange confirms it is gone.

        True: the position is booked (by its executions, or from REST when the stream was
        silent). False: it is still (partly) open after ``CLOSE_ATTEMPTS``; its protection was
        left in place, and the caller reports it. While it runs the risk manager knows a close
        of this symbol is in flight: another symbol's entry waits for its PnL.
        """
        with self._risk.settling(self.symbol):
            return await self._close_market_attempts(pos, reason)

    async def _close_market_attempts(self, pos: LocalPosition, reason: CloseReason) -> bool:
        for attempt in range(1, CLOSE_ATTEMPTS + 1):
            if pos.booked:
                return True
            qty = pos.qty
            cid = self._cid("emerg" if reason is CloseReason.EMERGENCY else "close")
            bounded_put(self._own_cids, cid, reason, REMEMBER)
            pos.close_cids.add(cid)
            self._orders_dirty = True
            exit_side = pos.side.exit_order_side
            row = self._journal.record_order_request(
                time_ms=self._clock.now_ms(),
                symbol=self.symbol,
                kind=reason.value,
                order_type="MARKET",
                side=exit_side.value,
                qty=qty,
                client_id=cid,
                reason=f"reduce-only close, attempt {attempt}",
            )
            try:
                res = await self._ex.market_order(
                    self.symbol, exit_side, qty, reduce_only=True, client_order_id=cid
                )
            except ExchangeError as exc:
                self._journal_error(row, exc)
                log.error("%s: %s close attempt %d failed: %s", self.symbol, reason.value, attempt, exc)
                if not is_transient(exc) and await self._still_open(pos):
                    return False  # refused and nothing happened: the position keeps its protection
            else:
                self._journal_result(row, res)
                bounded_put(self._own_orders, res.order_id, reason, REMEMBER)
                pos.close_orders.add(res.order_id)
            if not pos.booked:
                with contextlib.suppress(TimeoutError):
                    await self._clock.wait_for(pos.done.wait(), CLOSE_WAIT_S)
            if pos.booked:
                return True
            try:
                await self._confirm_close(pos, reason)
            except ExchangeError as exc:  # a failed read: the next attempt asks again
                log.warning("%s: close confirmation failed: %s", self.symbol, exc)
            if not pos.booked:
                await self._cancel_close_order(cid)  # an acknowledged close must not fill later
        if pos.booked:
            return True
        msg = f"{reason.value} close not confirmed after {CLOSE_ATTEMPTS} attempts; {pos.qty} still open"
        log.error("%s: %s", self.symbol, msg)
        self._journal.record_event(self._clock.now_ms(), "close_unconfirmed", self.symbol, msg)
        await self._notifier.notify("alert", alert_message(self.symbol, msg))
        return False

    async def _cancel_close_order(self, cid: str) -> None:
        """Before a retry: the previous close order, if still open, is cancelled (by client id
        lookup), so that two closes never work at once. Its fills so far are already counted."""
        try:
            o = await self._ex.get_order(self.symbol, client_order_id=cid)
            if o.status in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
                await self._ex.cancel_order(self.symbol, o.order_id)
        except ExchangeError as exc:
            log.warning("%s: cancel of close %s before the retry failed: %s", self.symbol, cid, exc)

    async def _still_open(self, pos: LocalPosition) -> bool:
        """After a refused close: is the position still there? (A reduce-only close is refused
        when the position is already gone; then the SYNC close books it.)"""
        try:
            pos_ex = await self._ex.position(self.symbol)
        except ExchangeError:
            return True
        if pos_ex is None:
            await self._sync_close("close refused, exchange flat")
            return pos.booked is False
        return True

    async def _confirm_close(self, pos: LocalPosition, reason: CloseReason) -> None:
        """The stream did not confirm in time: ask the exchange what happened."""
        msg = f"{reason.value} close of {pos.qty} not confirmed by the stream within {CLOSE_WAIT_S:g}s"
        log.warning("%s: %s; checking REST", self.symbol, msg)
        self._journal.record_event(self._clock.now_ms(), "close_timeout", self.symbol, msg)
        try:
            pos_ex = await self._ex.position(self.symbol)
        except ExchangeError as exc:
            log.warning("%s: position read failed (%s)", self.symbol, exc)
            return
        if pos_ex is None:
            await self._sync_close(f"{reason.value} close confirmed by REST")
            return
        async with self._close_lock:
            if not pos.booked:
                await self._catch_up_from_rest(pos)
        if not pos.booked and pos_ex.side is pos.side:
            pos.qty = pos_ex.quantity  # what is left is what the exchange says

    async def _sync_close(self, why: str) -> None:
        """The exchange is flat but we hold a position: book it from REST (SYNC).

        First the executions ``userTrades`` shows (exact PnL, trade ids accounted); whatever is
        still missing then comes from income history: Σ REALIZED_PNL − Σ |COMMISSION| +
        Σ FUNDING_FEE of this symbol since the entry, every row not already accounted (by trade
        id, persisted, so a restart cannot count a row twice: defect 11). Partial closes seen
        before are part of the trade (defect 9).
        """
        async with self._close_lock:
            pos = self._pos
            if pos is None or pos.booked:
                return
            await self._catch_up_from_rest(pos)
            if pos.booked:
                await self._cancel_leftovers()
                return
            rows = await self._retry(
                lambda: self._ex.income_history(
                    self.symbol,
                    pos.entry_time_ms,
                    ("REALIZED_PNL", "COMMISSION", "FUNDING_FEE", "INSURANCE_CLEAR"),
                )
            )
            if self._pos is not pos or pos.booked:
                return
            rp = fees = funding = 0.0
            keys: list[str] = []
            for r in rows:
                if r.symbol != self.symbol or r.time_ms < pos.entry_time_ms:
                    continue
                if r.income_type in ("REALIZED_PNL", "COMMISSION") and r.trade_id.isdigit():
                    key = exec_key(int(r.trade_id))
                else:
                    key = income_key(r.income_type, r.trade_id or str(r.time_ms))
                if key in self._accounted:
                    continue
                if r.income_type == "REALIZED_PNL":
                    rp += r.income
                elif r.income_type == "COMMISSION":
                    fees += abs(r.income)
                elif r.income_type == "FUNDING_FEE":
                    funding += r.income
                elif r.income_type == "INSURANCE_CLEAR":
                    fees -= r.income  # liquidation clearance fee (negative income)
                else:
                    continue
                keys.append(key)
            qty = pos.qty + pos.closed_qty
            total_rp = pos.closed_rp + rp
            exit_price = pos.entry_price + pos.side.sign * (total_rp / qty) if qty > 0 else pos.entry_price
            entry_fee = self._entry_fee(pos)
            if pos.entry_exec_qty <= 0:  # the entry's commission rows were not accounted: in fees
                entry_fee = min(entry_fee, fees)
                fees -= entry_fee
            trade = ClosedTrade(
                symbol=self.symbol,
                side=pos.side,
                entry_time_ms=pos.entry_time_ms,
                exit_time_ms=self._clock.now_ms(),
                entry_price=pos.entry_price,
                exit_price=exit_price,
                quantity=qty,
                realized_pnl=total_rp,
                entry_fee=entry_fee,
                exit_fee=pos.closed_fee + fees,
                funding=funding,
                reason=CloseReason.SYNC,
            )
            pos.booked = True
            self._pos = None
            self._recent.append(pos)
            self._journal.record_event(
                self._clock.now_ms(),
                "sync_close",
                self.symbol,
                f"{why}: exchange flat, local {pos.side.value} {qty}; closed from {len(keys)} income rows",
                {"realized_pnl": total_rp, "fees": fees, "funding": funding},
            )
            await self._finish(pos, trade, keys)  # the rows accounted with the trade's row
            await self._cancel_leftovers()
