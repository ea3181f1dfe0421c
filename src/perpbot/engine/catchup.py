"""Catching up with what the stream did not say: REST executions, late funding, late fees.

Why a module: the stream is the fast path (``ledger``); these are the slow, exact paths that
read ``userTrades``, the order and algo queries and income history when events were lost, came
late, or an answer was not available at booking time. Each amends exactly what it finds missing,
by trade id, so nothing is counted twice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from perpbot.domain.types import ClosedTrade, OrderType
from perpbot.engine.bot_base import (
    HOUR_MS,
    BotBase,
    Execution,
    LocalPosition,
    bounded_put,
    exec_key,
    execution_of_fill,
    income_key,
    log,
    reaches_settlement,
)
from perpbot.engine.notifier import kill_switch_message
from perpbot.exchange.errors import ExchangeError

_REMEMBER = 256
FUNDING_WATCH_MS = 24 * HOUR_MS  # how long a booked trade's funding rows are watched for


class CatchUpMixin(BotBase):
    """REST catch-up and late amendments of booked trades (see the module docstring)."""

    async def _take_parked(self, pos: LocalPosition) -> None:
        """An adopted position takes the parked closing executions that happened after it was
        opened: its quantity before them is the exchange's plus theirs, and they are its."""
        mine = [
            e
            for e in self._parked
            if e.side is pos.side.exit_order_side
            and e.time_ms >= pos.entry_time_ms
            and exec_key(e.trade_id) not in self._accounted
        ]
        if not mine:
            return
        self._parked = deque(e for e in self._parked if e not in mine)
        q = sum(e.qty for e in mine)
        pos.qty = round(pos.qty + q, 12)
        pos.entry_qty = max(pos.entry_qty, pos.qty)
        async with self._close_lock:
            for e in mine:
                await self._apply_close(e)

    # ------------------------------------------------------------------ REST catch-up
    async def _catch_up_from_rest(self, pos: LocalPosition) -> None:
        """Apply the executions the stream did not deliver (issue 7 §2.5), from ``userTrades``;
        learn which orders the position's SL/TP created from the algo-order query. Call under
        ``_close_lock``."""
        ex = self._ex
        await self._learn_triggered(pos)
        fills = await self._retry(lambda: ex.user_trades(self.symbol, pos.entry_time_ms))
        unknown: set[int] = set()
        for f in sorted(fills, key=lambda f: f.trade_id):
            if exec_key(f.trade_id) in self._accounted or pos.booked:
                continue
            if f.order_id == pos.entry_order_id or f.order_id in self._entry_acc:
                if self._entry_execution(execution_of_fill(f)):
                    self._spawn(self._ensure_protection_bg(pos))
                continue
            if f.side is not pos.side.exit_order_side:
                continue
            if f.order_id not in pos.close_orders and f.order_id not in self._own_orders:
                unknown.add(f.order_id)
            e = execution_of_fill(f)
            if f.order_id in unknown:
                e = await self._typed(e)
            await self._apply_close(e)

    async def _learn_triggered(self, pos: LocalPosition) -> None:
        """Which orders the position's SL/TP created, from the algo-order query (their
        executions then close it, and its trade is classified SL / TP)."""
        for algo_id in sorted(pos.algo_ids):
            try:
                algo = await self._retry(lambda a=algo_id: self._ex.get_conditional(self.symbol, algo_id=a))
            except ExchangeError:
                continue
            if algo.triggered_order_id:
                bounded_put(self._triggered, algo.triggered_order_id, algo_id, _REMEMBER)
                pos.close_orders.add(algo.triggered_order_id)

    async def _entry_from_rest(self, pos: LocalPosition) -> None:
        ex = self._ex
        try:
            fills = await self._retry(lambda: ex.user_trades(self.symbol, pos.entry_time_ms))
        except ExchangeError as exc:
            log.warning("%s: entry executions unavailable (%s); entry fee may be short", self.symbol, exc)
            return
        for f in fills:
            if f.order_id == pos.entry_order_id:
                self._entry_execution(execution_of_fill(f), pos)

    async def _typed(self, e: Execution) -> Execution:
        """A REST execution of an order we did not send: its type and client id from the order
        query (a liquidation or deleverage is booked as such)."""
        ex = self._ex
        try:
            o = await self._retry(lambda: ex.get_order(self.symbol, order_id=e.order_id))
        except ExchangeError:
            return e
        liq = o.type is OrderType.LIQUIDATION or o.client_order_id.startswith(("autoclose-", "adl_"))
        return Execution(
            e.order_id,
            e.trade_id,
            e.side,
            e.qty,
            e.price,
            e.realized_pnl,
            e.commission,
            e.time_ms,
            client_id=o.client_order_id,
            liquidation=liq,
            order_type=o.type,
            original_type=o.type,
        )

    # ------------------------------------------------------------------ late amendments
    def _restore_watches(self) -> None:
        """Start-up: watch again the trades an earlier process booked within
        ``FUNDING_WATCH_MS`` (its watches lived in its memory): late funding for those open at a
        whole hour, the entry fee for those whose entry executions the journal does not cover
        (the read at booking failed). Nothing is counted twice: a row or an execution already in
        a trade is in the journal's ``accounted`` table, which the amendments skip."""
        if self._restored:
            return  # a repeated start-up attempt
        booked = self._journal.booked_since(self.symbol, self._clock.now_ms() - FUNDING_WATCH_MS)
        watched = {w[0] for w in self._funding_watch} | {w[0] for w in self._fee_watch}
        for trade_id, order_id, trade in booked:
            if trade_id in watched:
                continue  # booked by this process's recovery (an unbooked round trip): watched
            fee_short = order_id != 0 and (  # an adopted position's trade names no entry order
                sum(q for _t, _id, q, _p, _c in self._journal.fills_of_order(self.symbol, order_id))
                < trade.quantity - self._tol()
            )
            settled = reaches_settlement(trade)
            if fee_short or settled:
                self._restored[trade_id] = trade
            if settled:
                self._funding_watch.append((trade_id, None, trade))
            if fee_short:
                self._fee_watch.append((trade_id, None, trade, order_id))

    def _booked(self, trade_id: int, index: int | None) -> ClosedTrade:
        """A watched trade as booked so far (both amendments read it: neither undoes the other)."""
        return self.closed_trades[index] if index is not None else self._restored[trade_id]

    def _rebook(self, trade_id: int, index: int | None, amended: ClosedTrade) -> None:
        if index is not None:
            self.closed_trades[index] = amended
        else:
            self._restored[trade_id] = amended

    async def _late_funding(self) -> None:
        """Funding rows that became visible only after their trade was booked (income history
        lags on Binance): added to that trade (journal row amended, risk PnL corrected), each row
        once. Booked trades are watched for ``FUNDING_WATCH_MS``."""
        now = self._clock.now_ms()
        while self._funding_watch and now - self._funding_watch[0][2].exit_time_ms > FUNDING_WATCH_MS:
            self._funding_watch.popleft()
        if not self._funding_watch:
            return
        start = min(w[2].entry_time_ms for w in self._funding_watch)
        rows = await self._ex.income_history(self.symbol, start, ("FUNDING_FEE",))
        # Binance charges the quantity open at the settlement stamp: a trade owns the rows in
        # [entry, exit), as at booking; one stamped at its exit is the next position's.
        for trade_id, index, trade in list(self._funding_watch):  # a booking may add one meanwhile
            extra = 0.0
            keys: list[str] = []
            for r in rows:
                key = income_key(r.income_type, r.trade_id or str(r.time_ms))
                if (
                    r.symbol == self.symbol
                    and trade.entry_time_ms <= r.time_ms < trade.exit_time_ms
                    and key not in self._accounted
                ):
                    extra += r.income
                    keys.append(key)
            if not keys:
                continue
            cur = self._booked(trade_id, index)
            amended = replace(cur, funding=cur.funding + extra)
            with self._journal.together():  # rows counted and trade amended, or neither
                self._account(keys)
                self._journal.amend_trade_funding(trade_id, amended.funding, amended.net_pnl)
            self._rebook(trade_id, index, amended)
            await self._risk.record_pnl(extra, time_ms=trade.exit_time_ms)
            msg = f"late funding {extra:.8f} added to trade {trade_id}"
            log.warning("%s: %s", self.symbol, msg)
            self._journal.record_event(now, "late_funding", self.symbol, msg)
            await self._kill_switch_amended(trade_id, amended)

    async def _late_entry_fees(self) -> None:
        """Entry fees of booked trades whose entry executions could not be read at booking:
        the trade is amended (journal, risk) once ``userTrades`` answers; the executions are
        journaled before they are counted, as at booking."""
        ex = self._ex
        start = min(w[2].entry_time_ms for w in self._fee_watch)
        fills = await ex.user_trades(self.symbol, start)
        for trade_id, index, trade, order_id in list(self._fee_watch):
            mine = [
                f for f in fills if f.order_id == order_id and exec_key(f.trade_id) not in self._accounted
            ]
            self._fee_watch.remove((trade_id, index, trade, order_id))
            if not mine:
                continue
            fee = sum(f.commission for f in mine)
            cur = self._booked(trade_id, index)
            amended = replace(cur, entry_fee=cur.entry_fee + fee)
            with self._journal.together():  # executions stored and counted, trade amended
                self._journal_rest_fills(mine)
                self._account([exec_key(f.trade_id) for f in mine])
                self._journal.amend_trade_fees(trade_id, amended.entry_fee, amended.net_pnl)
            self._rebook(trade_id, index, amended)
            await self._risk.record_pnl(-fee, time_ms=trade.exit_time_ms)
            self._journal.record_event(
                self._clock.now_ms(),
                "late_entry_fee",
                self.symbol,
                f"entry fee {fee:.8f} added to trade {trade_id}",
            )
            await self._kill_switch_amended(trade_id, amended)

    async def _kill_switch_amended(self, trade_id: int, amended: ClosedTrade) -> None:
        """The kill switch judges an amended trade as amended, as a restart reading the journal
        would: a late row that turns a break-even trade into a loser may complete a trip
        (before, only the restart saw it; found by review)."""
        trip = self.kill_switch.amend(trade_id, amended.net_pnl, self._clock.now_ms())
        if trip:
            await self._notifier.notify("kill_switch", kill_switch_message(self.symbol, trip))
