"""Exit accounting: every execution matched to its position and counted exactly once.

Why executions, not order reports (issue 7 defects 1, 4, 5, 9): a close can arrive in several
executions, some by the stream and some only by REST, late, or never; a partial deleverage is an
execution like any other. Each execution (stream ``l``/``L`` or REST ``userTrades``) is matched
to the position it belongs to, reduces that position, and is marked accounted by trade id in the
journal before anything else happens; the position is booked when its quantity reaches zero.
So a partial ``CALCULATED`` fill reduces the position instead of closing it, an execution seen
twice (stream and REST, or a restart) is counted once, and an old stop's late fill can never
close the current position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from perpbot.domain.events import OrderTradeUpdate
from perpbot.domain.types import ClosedTrade, CloseReason, OrderType
from perpbot.engine.bot_base import (
    HOUR_MS,
    BotBase,
    EntryAcc,
    Execution,
    LocalPosition,
    bounded_put,
    exec_key,
    income_key,
    log,
    reaches_settlement,
)
from perpbot.engine.notifier import close_message, kill_switch_message
from perpbot.exchange.errors import ExchangeError

_REMEMBER = 256


def execution_of(ev: OrderTradeUpdate) -> Execution:
    liquidation = (
        ev.order_type is OrderType.LIQUIDATION
        or ev.original_type is OrderType.LIQUIDATION
        or ev.execution_type == "CALCULATED"
        or ev.client_order_id.startswith("autoclose-")
    )
    return Execution(
        order_id=ev.order_id,
        trade_id=ev.trade_id,
        side=ev.side,
        qty=ev.last_filled_qty,
        price=ev.last_filled_price,
        realized_pnl=ev.realized_pnl,
        commission=ev.commission,
        time_ms=ev.trade_time_ms or ev.event_time_ms,
        client_id=ev.client_order_id,
        liquidation=liquidation,
        order_type=ev.order_type,
        original_type=ev.original_type,
        avg_price=ev.avg_price,
    )


def reduce_by(pos: LocalPosition, ex: Execution) -> None:
    """Count one closing execution in ``pos`` (quantity, notional, PnL, fee, what ended it)."""
    pos.qty = round(pos.qty - ex.qty, 12)
    pos.closed_qty += ex.qty
    pos.closed_notional += ex.qty * ex.price
    pos.closed_rp += ex.realized_pnl
    pos.closed_fee += ex.commission
    pos.close_orders.add(ex.order_id)
    if ex.time_ms >= pos.last_exit_ms:
        # What ended it is the latest execution, not the last one learnt: REST catch-up can
        # bring an earlier one (a deleverage during a dead stream) after the final close.
        pos.last_close_order = ex.order_id
        pos.last_close_cid = ex.client_id or pos.last_close_cid
        pos.last_exit_ms = ex.time_ms
        pos.last_close_price = ex.avg_price if ex.avg_price > 0 else ex.price
        pos.liquidated = ex.liquidation  # a partial deleverage before the end is not
        pos.last_types = (ex.original_type, ex.order_type)


class LedgerMixin(BotBase):
    """Execution matching, exact-once accounting and trade booking (see the module docstring)."""

    # ------------------------------------------------------------------ matching
    def _owner(self, ex: Execution) -> LocalPosition | None:
        """The position a closing execution belongs to (issue 7 §2.1), or None."""
        # A booked position is flat: an unaccounted execution of one of its orders came after it
        # was closed (a late close order of it filling later) and reduced whatever position the
        # symbol had then, i.e. the current one.
        for p in (self._pos, *reversed(self._recent)):
            if (
                p is not None
                and not p.booked
                and (ex.order_id in p.close_orders or (ex.client_id and ex.client_id in p.close_cids))
            ):
                return p
        algo = self._triggered.get(ex.order_id)
        owner = self._algo_owner.get(algo) if algo is not None else None
        if owner is not None and not owner.booked:
            return owner
        pos = self._pos
        if pos is None or ex.side is not pos.side.exit_order_side:
            return None
        # An order we do not know closed it (a trigger whose ALGO_UPDATE is missing, a
        # deleverage, a liquidation, a manual close): the current position's only if it
        # executed after the entry.
        if pos.entry_trade_id and ex.trade_id and ex.trade_id <= pos.entry_trade_id:
            return None
        if ex.time_ms < pos.entry_time_ms:
            return None
        return pos

    # ------------------------------------------------------------------ close executions
    async def _close_execution(self, ex: Execution) -> None:
        async with self._close_lock:
            await self._apply_close(ex)

    async def _apply_close(self, ex: Execution) -> None:
        """Reduce the owning position by one execution (call under ``_close_lock``)."""
        key = exec_key(ex.trade_id)
        if key in self._accounted:
            return
        owner = self._owner(ex)
        if owner is None or owner.booked:
            # Parked, not counted: the position it reduced is not known here yet (an entry still
            # pending, or adopted later); adoption takes it (``_take_parked``).
            if all(p.trade_id != ex.trade_id for p in self._parked):
                self._parked.append(ex)
            msg = f"execution {ex.trade_id} of order {ex.order_id} ({ex.qty}) matches no open position"
            log.warning("%s: %s", self.symbol, msg)
            self._journal.record_event(self._clock.now_ms(), "unattributed_execution", self.symbol, msg)
            return
        self._account([key])
        reduce_by(owner, ex)
        if owner.qty <= self._tol():
            await self._book(owner, CloseReason.MANUAL)
            return
        msg = f"partial close {ex.qty} by order {ex.order_id}; {owner.qty} left"
        log.info("%s: %s", self.symbol, msg)
        self._journal.record_event(self._clock.now_ms(), "partial_close", self.symbol, msg)
        if owner is self._pos:
            self._spawn(self._ensure_protection_bg(owner))

    # ------------------------------------------------------------------ entry executions
    def _entry_execution(self, ex: Execution, target: LocalPosition | None = None) -> bool:
        """Account one execution of an entry order; True when it made the position grow."""
        key = exec_key(ex.trade_id)
        if key in self._accounted:
            return False
        if ex.rest:  # persisted before it is counted, as a reported one: a restart needs its fee
            self._journal.record_rest_execution(self.symbol, ex)
        self._account([key])
        acc = self._entry_acc.get(ex.order_id)
        if acc is None:
            acc = EntryAcc()
            bounded_put(self._entry_acc, ex.order_id, acc, _REMEMBER)
        acc.qty += ex.qty
        acc.notional += ex.qty * ex.price
        acc.fee += ex.commission
        acc.max_trade_id = max(acc.max_trade_id, ex.trade_id)
        acc.time_ms = acc.time_ms or ex.time_ms
        pos = target or self._pos
        if pos is None or pos.entry_order_id != ex.order_id:
            p = self._pending
            if p is None or (ex.order_id != p.order_id and ex.client_id != p.client_id):
                # An entry order's execution after its position ended (a partial entry's late
                # rest): it opens a new position, adopted by reconcile, which takes its fee.
                self._stray_entries.append(ex)
            return False
        pos.entry_exec_qty += ex.qty
        pos.entry_exec_fee += ex.commission
        pos.entry_trade_id = max(pos.entry_trade_id, ex.trade_id)
        if pos.entry_exec_qty > pos.entry_qty + self._tol():
            grow = pos.entry_exec_qty - pos.entry_qty
            pos.qty = round(pos.qty + grow, 12)
            pos.entry_qty = pos.entry_exec_qty
            pos.entry_price = acc.avg_price
            msg = f"entry order {ex.order_id} filled {grow} more; position {pos.qty}"
            log.warning("%s: %s", self.symbol, msg)
            self._journal.record_event(self._clock.now_ms(), "entry_grew", self.symbol, msg)
            return True
        return False

    # ------------------------------------------------------------------ booking
    async def _book(self, pos: LocalPosition, fallback: CloseReason) -> None:
        """The position is flat: build its trade from its executions and finish it. Until the
        risk manager has its PnL, another symbol's entry waits (``RiskManager.settling``)."""
        with self._risk.settling(self.symbol):
            await self._book_flat(pos, fallback)

    async def _book_flat(self, pos: LocalPosition, fallback: CloseReason) -> None:
        tol = self._tol()
        # An entry known only in part: its executions' events never came (their fee is missing),
        # or a close took more than the known quantity (a deleverage of parts the stream missed).
        if pos.entry_order_id and (pos.entry_exec_qty < pos.entry_qty - tol or pos.qty < -tol):
            await self._entry_from_rest(pos)
            if pos.qty > tol and not await self._closes_found(pos):
                return  # its entry was bigger than known and the rest is still open (or booked)
        pos.booked = True
        p = self._pending
        if p is not None and pos.entry_order_id and p.order_id == pos.entry_order_id:
            self._pending = None  # its order belonged to this position: nothing left to resolve
        reason = self._classify(pos, fallback)
        if self._pos is pos:
            self._pos = None
        self._recent.append(pos)
        trade, counted = await self._build_trade(pos, reason)
        await self._finish(pos, trade, counted)

    async def _closes_found(self, pos: LocalPosition) -> bool:
        """The entry's REST executions grew a position that looked flat (it was adopted at a
        partial fill, or after a deleverage whose event was lost): the closes that really took
        it to zero are fetched too. True when the caller must book it now; False when they
        booked it already, or it is still open (then it is protected for what is left, and a
        REST failure leaves it to reconcile's SYNC check). Call under ``_close_lock``."""
        try:
            await self._catch_up_from_rest(pos)
        except ExchangeError as exc:
            log.warning("%s: closing executions unavailable (%s); left to reconcile", self.symbol, exc)
            return False
        if pos.booked:
            return False
        if pos.qty > self._tol():
            if pos is self._pos:
                self._spawn(self._ensure_protection_bg(pos))
            return False
        return True

    def _classify(self, pos: LocalPosition, fallback: CloseReason) -> CloseReason:
        """Why a position closed: liquidation, our own close, the algo order that created the
        closing order (by id), the original type, else the nearest stored SL/TP price."""
        if pos.liquidated:
            return CloseReason.LIQUIDATION
        reason = self._own_cids.get(pos.last_close_cid) if pos.last_close_cid else None
        if reason is None:
            reason = self._own_orders.get(pos.last_close_order)
        if reason is not None:
            return reason
        algo = self._triggered.get(pos.last_close_order)
        if algo is not None:
            kind = self._algo_kind.get(algo)
            if kind is not None:
                return kind
        for t in pos.last_types:
            if t is OrderType.STOP_MARKET:
                return CloseReason.SL
            if t is OrderType.TAKE_PROFIT_MARKET:
                return CloseReason.TP
        if fallback is CloseReason.SYNC:
            return fallback
        if pos.sl_price > 0 or pos.tp_price > 0:
            d_sl = abs(pos.last_close_price - pos.sl_price) if pos.sl_price > 0 else math.inf
            d_tp = abs(pos.last_close_price - pos.tp_price) if pos.tp_price > 0 else math.inf
            return CloseReason.SL if d_sl <= d_tp else CloseReason.TP
        return fallback

    def _entry_fee(self, pos: LocalPosition) -> float:
        if pos.entry_exec_qty > 0:
            return pos.entry_exec_fee
        acc = self._entry_acc.get(pos.entry_order_id) if pos.entry_order_id else None
        if acc is not None and acc.qty > 0:
            return acc.fee
        return pos.entry_fee or 0.0

    async def _build_trade(self, pos: LocalPosition, reason: CloseReason) -> tuple[ClosedTrade, list[str]]:
        """The position's trade, and the income rows it counts (accounted with its row, ``_finish``)."""
        qty = pos.closed_qty
        exit_price = pos.closed_notional / qty if qty > 0 else pos.last_close_price
        exit_time = pos.last_exit_ms or self._clock.now_ms()
        funding = clearance = 0.0
        counted: list[str] = []
        # Funding settles on whole UTC hours: a position that spans no whole hour paid none, and
        # only a liquidation has a clearance fee (skips most income-history calls).
        first_hour = -(-pos.entry_time_ms // HOUR_MS) * HOUR_MS
        if first_hour < exit_time or reason is CloseReason.LIQUIDATION:
            funding, clearance, counted = await self._income_since_entry(pos, exit_time)
        trade = ClosedTrade(
            symbol=self.symbol,
            side=pos.side,
            entry_time_ms=pos.entry_time_ms,
            exit_time_ms=exit_time,
            entry_price=pos.entry_price,
            exit_price=exit_price,
            quantity=qty,
            realized_pnl=pos.closed_rp,
            entry_fee=self._entry_fee(pos),
            exit_fee=pos.closed_fee + clearance,
            funding=funding,
            reason=reason,
        )
        return trade, counted

    async def _income_since_entry(self, pos: LocalPosition, exit_time: int) -> tuple[float, float, list[str]]:
        """(Σ FUNDING_FEE, Σ liquidation clearance fee, their rows' keys) of this symbol while the
        position was open.

        Funding counts on ``[entry, exit)``: a settlement at the very millisecond of a reverse
        belongs to the *new* position. A clearance fee counts on ``(entry, exit]``: it is the fee
        of the liquidation that *ended* a position. The rows used are accounted (persisted) with
        the trade's row (``_finish``), so that a later SYNC close or a restart never counts them
        twice, and a process killed in between has counted neither.
        """
        try:
            rows = await self._retry(
                lambda: self._ex.income_history(
                    self.symbol, pos.entry_time_ms, ("FUNDING_FEE", "INSURANCE_CLEAR")
                )
            )
        except ExchangeError as exc:
            log.warning("%s: income history unavailable (%s); funding counted as 0", self.symbol, exc)
            return 0.0, 0.0, []
        funding = clearance = 0.0
        keys: list[str] = []
        for r in rows:
            if r.symbol != self.symbol or not (pos.entry_time_ms <= r.time_ms <= exit_time):
                continue
            key = income_key(r.income_type, r.trade_id or str(r.time_ms))
            if key in self._accounted:
                continue
            if r.income_type == "FUNDING_FEE" and r.time_ms < exit_time:
                funding += r.income
            elif r.income_type == "INSURANCE_CLEAR" and r.time_ms > pos.entry_time_ms:
                clearance -= r.income  # a negative income row is a fee paid
            else:
                continue
            keys.append(key)
        return funding, clearance, keys

    async def _finish(self, pos: LocalPosition, trade: ClosedTrade, counted: Sequence[str] = ()) -> None:
        """Journal (the trade's row with the income rows it counts, ``counted``: both or neither
        are in the file), risk, cancel every protective order of the position (confirmed), kill
        switch, wake the position's close waiter, notify (in that order)."""
        with self._journal.together():
            self._account(list(counted))
            trade_id = self._journal.record_trade(trade, entry_order_id=pos.entry_order_id)
        self.closed_trades.append(trade)
        if pos.entry_order_id and pos.entry_exec_qty < pos.entry_qty - self._tol():
            # The entry's executions (and fee) could not be read: added when they can be.
            self._fee_watch.append((trade_id, len(self.closed_trades) - 1, trade, pos.entry_order_id))
        if reaches_settlement(trade):
            self._funding_watch.append((trade_id, len(self.closed_trades) - 1, trade))
        await self._risk.close(self.symbol, trade.net_pnl, time_ms=trade.exit_time_ms)
        await self._cancel_protection(pos)
        trip = self.kill_switch.record(trade, self._clock.now_ms(), trade_id)
        pos.done.set()
        estimated = pos.side.sign * (trade.exit_price - trade.entry_price) * trade.quantity
        log.info(
            "CLOSE %s %s %s exit=%.6f qty=%s net=%.6f estimated=%.6f fees=%.6f funding=%.6f",
            self.symbol,
            trade.side.value,
            trade.reason.value,
            trade.exit_price,
            trade.quantity,
            trade.net_pnl,
            estimated,
            trade.fees,
            trade.funding,
        )
        await self._notifier.notify(
            "close",
            close_message(
                self.symbol,
                trade.side,
                trade.reason,
                exit_price=trade.exit_price,
                estimated=estimated,
                actual=trade.net_pnl,
            ),
        )
        if trip:
            await self._notifier.notify("kill_switch", kill_switch_message(self.symbol, trip))
