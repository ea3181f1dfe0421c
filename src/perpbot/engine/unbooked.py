"""The round trip a dead process left unbooked, found at a flat start and booked from the venue.

Why: a process killed after its position's closing executions but before the trade's row (the
close's stream events never handled, or the booking's income read still in flight) restarts to
a flat symbol. Nothing on the exchange is left to adopt, yet the journal holds a filled ENTRY
that no trade booked: without this, that round trip's PnL, fees and executions are in no trade
(found by the chaos test, issue 10 §4: a SIGKILL between the partial fills of a REVERSE close).

How it is recognised, without guessing from clocks: every trade row names the entry order it
booked (``Journal.trade_of_entry``); journals written before that column rely on the older test
(a trade that closed after the entry was requested). The entry's executions and every closing
execution after them come from ``userTrades`` (the venue's record, by order id and trade id), so
nothing is counted twice: executions a previous process already accounted are added to the
trade's figures without being accounted again, the rest go through the ledger as usual.
"""

from __future__ import annotations

import math

from perpbot.domain.client_ids import CANDLE_MS
from perpbot.domain.types import CloseReason, Fill, Side
from perpbot.engine.bot_base import (
    REMEMBER,
    BotBase,
    EntryAcc,
    LocalPosition,
    PendingEntry,
    bounded_put,
    exec_key,
    execution_of_fill,
    is_transient,
    log,
)
from perpbot.engine.journal_records import OrderRecord
from perpbot.engine.ledger import reduce_by
from perpbot.exchange.errors import NO_SUCH_ORDER, ExchangeError

# The venue stamps executions on its clock, the journal on ours: the entry's executions are read
# from a little before its request (they are then picked by order id, so nothing else is taken).
CLOCK_SLACK_MS = 60_000
_KINDS = {r.value: r for r in CloseReason}


class UnbookedMixin(BotBase):
    """Books, at a flat start, the last entry the journal holds unbooked (module docstring)."""

    async def _book_unbooked_entry(self, atr: float = math.nan) -> None:
        """``atr``: the preloaded candles' ATR, the stops of an entry the venue may still execute."""
        rec = self._journal.last_order(self.symbol, ("ENTRY",))
        if rec is None or self._entry_booked(rec):
            return
        try:
            rebuilt = await self._rebuild_entry(rec, atr)
        except ExchangeError as exc:
            if is_transient(exc):
                raise  # start-up retries the whole recovery
            entry = rec.client_id or rec.order_id
            msg = f"entry {entry} may be unbooked; its executions are unreadable ({exc})"
            log.error("%s: %s", self.symbol, msg)
            self._journal.record_event(self._clock.now_ms(), "unbooked_unreadable", self.symbol, msg)
            return
        if rebuilt is None:
            return
        pos, fills = rebuilt
        self._learn_closes_of(pos, rec)
        before = self._count_accounted_closes(pos, fills)
        self._pos = pos
        await self._risk.register(self.symbol, pos.side)
        msg = (
            f"entry {pos.entry_order_id} ({pos.side.value} {pos.entry_qty}) was left unbooked by the"
            f" previous process; booking it from the exchange's executions ({before} counted before)"
        )
        log.warning("%s: %s", self.symbol, msg)
        data = {"entry_order_id": pos.entry_order_id}
        self._journal.record_event(self._clock.now_ms(), "unbooked_round_trip", self.symbol, msg, data)
        await self._learn_triggered(pos)
        if pos.qty <= self._tol():
            async with self._close_lock:
                await self._book(pos, CloseReason.SYNC)
        else:
            await self._sync_close("flat start: unbooked round trip")

    def _entry_booked(self, rec: OrderRecord) -> bool:
        """Whether a trade booked the journaled entry ``rec``: exactly, by the entry order the
        trade names. Only when the symbol's last trade names none (an adopted position whose
        entry was unknown, a journal written before the column) is it judged by time: booked
        if that trade closed after ``rec`` was requested. Never otherwise, because the two
        stamps come from two clocks (the venue's exit, our request): with the venue ahead by
        more than a reverse's few milliseconds, the re-entry of a reverse looked booked, and
        a restart left its round trip in no trade (found by review, 2026-12-03). ``rec``
        without an order id: ``_rebuild_entry`` asks the venue for it and checks again."""
        if rec.order_id and self._journal.trade_of_entry(self.symbol, rec.order_id):
            return True
        last = self._journal.last_trade_exit(self.symbol)
        return last is not None and last[1] == 0 and last[0] > rec.time_ms

    async def _rebuild_entry(
        self, rec: OrderRecord, atr: float = math.nan
    ) -> tuple[LocalPosition, list[Fill]] | None:
        """The entry as it executed on the venue, with the symbol's executions since just before
        it (its closes among them: one read serves both); None when it never executed."""
        if rec.status in ("EXPIRED", "CANCELED", "REJECTED") and not rec.executed_qty:
            return None  # a final answer with nothing executed
        order_id = rec.order_id or 0
        if not order_id and rec.client_id:
            try:
                o = await self._retry(lambda: self._ex.get_order(self.symbol, client_order_id=rec.client_id))
            except ExchangeError as exc:
                if exc.code == NO_SUCH_ORDER:
                    await self._pending_again(rec, atr)  # not *yet*, perhaps
                    return None
                raise
            order_id = o.order_id
            if order_id and self._journal.trade_of_entry(self.symbol, order_id):
                return None  # booked by a process that learnt its order id from the venue
        if not order_id:
            return None
        since = rec.time_ms - CLOCK_SLACK_MS
        fills = await self._retry(lambda: self._ex.user_trades(self.symbol, since))
        mine = [f for f in fills if f.order_id == order_id]
        if not mine:
            return None
        qty = sum(f.quantity for f in mine)
        side = Side.LONG if mine[0].side is Side.LONG.entry_order_side else Side.SHORT
        fee = sum(f.commission for f in mine)
        pos = LocalPosition(
            side=side,
            qty=qty,
            entry_price=sum(f.quantity * f.price for f in mine) / qty,
            entry_time_ms=min(f.time_ms for f in mine),
            entry_order_id=order_id,
            entry_fee=fee,
            entry_qty=qty,
            entry_trade_id=max(f.trade_id for f in mine),
            entry_exec_qty=qty,
            entry_exec_fee=fee,
            adopted=True,
        )
        self._journal_rest_fills(mine)
        self._account([exec_key(f.trade_id) for f in mine])
        self._entry_acc.setdefault(order_id, EntryAcc())
        return pos, fills

    async def _pending_again(self, rec: OrderRecord, atr: float) -> None:
        """An entry request the dead process never had an answer to, unknown to the venue: after
        a timeout Binance may still execute it. It is pending again, as it was in the dead
        process (registered; its fills adopted and protected at once with ``atr``, by
        ``_late_entry``; the next reconcile pass releases it when the venue still does not know
        it). Without it, such fills matched nothing: unprotected until a reconcile pass, which
        found no stop prices for them and closed the position as an emergency. Only a recent
        request (its candle or the next): an older one is not executed any more."""
        age = self._clock.now_ms() - rec.time_ms
        if not rec.client_id or age > 2 * CANDLE_MS or not (math.isfinite(atr) and atr > 0):
            return
        side = Side.LONG if rec.side == Side.LONG.entry_order_side.value else Side.SHORT
        self._pending = PendingEntry(rec.client_id, side, atr, rec.time_ms, journal_row=rec.id)
        await self._risk.register(self.symbol, side)
        msg = f"entry {rec.client_id} of the previous process is unknown to the venue yet: kept pending"
        log.warning("%s: %s", self.symbol, msg)
        self._journal.record_event(self._clock.now_ms(), "entry_pending", self.symbol, msg)

    def _learn_closes_of(self, pos: LocalPosition, rec: OrderRecord) -> None:
        """The journal's own orders after the entry: our market closes (their reason) and the
        position's SL/TP algo orders, so that the trade is classified as it would have been."""
        for o in self._journal.orders(self.symbol):
            if o.id <= rec.id:
                continue
            reason = _KINDS.get(o.kind)
            if o.kind in ("SL", "TP") and o.algo_id:
                pos.algo_ids.add(o.algo_id)
                bounded_put(self._algo_kind, o.algo_id, _KINDS[o.kind], REMEMBER)
            elif reason is not None:
                if o.order_id:
                    pos.close_orders.add(o.order_id)
                    bounded_put(self._own_orders, o.order_id, reason, REMEMBER)
                if o.client_id:
                    pos.close_cids.add(o.client_id)
                    bounded_put(self._own_cids, o.client_id, reason, REMEMBER)

    def _count_accounted_closes(self, pos: LocalPosition, fills: list[Fill]) -> int:
        """Closing executions after the entry that the dead process had already accounted
        (their quantity and PnL lived only in its memory): counted in this position without
        being accounted again. The unaccounted ones are left to the ledger (``_sync_close``)."""
        side = pos.side.exit_order_side
        mine = [
            f
            for f in sorted(fills, key=lambda f: f.trade_id)
            if f.side is side and f.trade_id > pos.entry_trade_id and exec_key(f.trade_id) in self._accounted
        ]
        counted = 0
        for f in mine:
            if pos.qty <= self._tol():
                break  # the position is whole: what follows is not its
            reduce_by(pos, execution_of_fill(f))
            counted += 1
        return counted
