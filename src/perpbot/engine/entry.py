"""Entry: risk check, filter, sizing and the market order under the global entry lock.

Why here: the entry is the only path that creates exposure; everything it needs (sizing,
ATR stops from the fill price, the risk registration) sits in one place.
"""

from __future__ import annotations

import asyncio
import math

from perpbot.domain.types import (
    OrderResult,
    OrderStatus,
    Side,
    SymbolFilters,
)
from perpbot.engine.bot_base import (
    ENTRY_FILL_WAIT_S,
    BotBase,
    EntryAcc,
    PendingEntry,
    is_transient,
    log,
)
from perpbot.engine.context import CandleContext
from perpbot.engine.sizing import position_size
from perpbot.exchange.errors import NO_NEED_TO_CHANGE_MARGIN_TYPE, ExchangeError
from perpbot.exchange.filters import round_price
from perpbot.strategy.signal import atr_stops

# How long an entry waits for its request row to be in the journal's file before the order may
# leave (the writer commits it in well under a millisecond when the database is free).
ENTRY_RECORD_WAIT_S = 1.0


class EntryMixin(BotBase):
    """Entry: risk check, filter, sizing and the market order under the global entry lock."""

    async def _try_enter(self, ctx: CandleContext, side: Side) -> bool:
        """Risk check → filter decision → entry (SPEC §8.3 step 8; the filter sees ``side``'s row)."""
        decision = await self._risk.can_open(self.symbol, side)
        if not decision:
            log.info("%s: %s entry refused by risk: %s", self.symbol, side.value, decision.reason)
            return False
        if self._filter.has_model:
            fd = self._filter.decide(ctx.features_for(side))
            if not fd.allowed:
                log.info(
                    "%s: %s entry rejected by the filter (%s, p=%s)",
                    self.symbol,
                    side.value,
                    fd.reason,
                    fd.proba,
                )
                return False
        if not (math.isfinite(ctx.atr) and ctx.atr > 0):
            log.warning("%s: ATR %r unusable; no stop can be computed, entry skipped", self.symbol, ctx.atr)
            return False
        return await self._open(ctx, side)

    async def _open(self, ctx: CandleContext, side: Side) -> bool:
        """SPEC §8.4 corrected: under the global entry lock read balance, size, order, register."""
        filters = await self._symbol_filters()
        self._busy = True
        try:
            async with self._risk.entry_lock:
                # Under the lock: the daily-loss gate with the position limits (defect 13).
                decision = await self._risk.can_enter(self.symbol, side)
                if not decision:
                    log.info("%s: %s entry refused by risk: %s", self.symbol, side.value, decision.reason)
                    return False
                if (self._to_cancel or self._untracked) and not await self._cancel_stale_protection():
                    return False
                if self.kill_switch.tripped:  # tripped by a close booked while the entry waited for it
                    log.info(
                        "%s: kill switch tripped meanwhile (%s): entry cancelled",
                        self.symbol,
                        self.kill_switch.reason,
                    )
                    return False
                balance = await self._ex.balance()
                allocation = balance / self._n
                ratio = self._risk.margin_ratio(balance, self._n)
                price = ctx.close
                qty = position_size(allocation, price, self._leverage, ratio, filters)
                notional = qty * price
                if (
                    allocation <= 0
                    or qty <= 0
                    or notional < filters.min_notional
                    or notional / self._leverage > allocation
                ):
                    log.warning(
                        "%s: entry skipped: allocation %.4f, ratio %.4f, qty %s, notional %.4f (min %s)",
                        self.symbol,
                        allocation,
                        ratio,
                        qty,
                        notional,
                        filters.min_notional,
                    )
                    return False
                await self._venue_settings()
                now = self._clock.now_ms()
                cid = self._cid("entry")
                # Intent first: the pending entry is known by its client id before the order
                # leaves, so fills delivered during the call are recognised as this entry's.
                self._pending = PendingEntry(cid, side, ctx.atr, now)
                self._orders_dirty = True
                row = self._journal.record_order_request(
                    time_ms=now,
                    symbol=self.symbol,
                    kind="ENTRY",
                    order_type="MARKET",
                    side=side.entry_order_side.value,
                    qty=qty,
                    client_id=cid,
                    reason=f"signal {side.value} ratio {ratio:.4f} balance {balance:.4f}",
                )
                self._pending.journal_row = row
                if not await self._journal.durable(ENTRY_RECORD_WAIT_S):
                    self._entry_not_recorded(row)
                    return False
                res: OrderResult | None
                try:
                    res = await self._ex.market_order(
                        self.symbol, side.entry_order_side, qty, client_order_id=cid
                    )
                except ExchangeError as exc:
                    self._journal_error(row, exc)
                    log.warning("%s: entry order failed: %s", self.symbol, exc)
                    if not is_transient(exc):
                        self._pending = None  # refused: nothing happened
                        return False
                    res = await self._order_by_cid(cid)  # outcome unknown: ask by client id first
                    if res is None or not res.order_id:
                        # Unknown to the exchange *yet* is not "never": after a timeout Binance
                        # may still execute the order (send/execution status unknown). Kept
                        # pending (registered): its fills are adopted and protected at once, and
                        # a later query that still finds nothing releases it.
                        await self._keep_pending("entry outcome unknown after a failed call")
                        return False
                    # Its outcome, as any answer: a restart then knows the order id and finds the
                    # trade that booked it by that id (``_entry_booked``).
                    self._journal_result(row, res)
                else:
                    self._journal_result(row, res)
                self._pending.order_id = res.order_id
                self._entry_acc.setdefault(res.order_id, EntryAcc())
                fill_price, fill_qty, final = await self._entry_fill(res, side)
                if fill_qty <= 0 or fill_price <= 0:
                    if not final:
                        await self._keep_pending(f"entry order {res.order_id} not filled yet")
                        return False
                    self._pending = None
                    msg = f"entry order {res.order_id} reported no fill ({res.status.value})"
                    log.warning("%s: %s", self.symbol, msg)
                    self._journal.record_event(self._clock.now_ms(), "entry_unfilled", self.symbol, msg)
                    return False
                self._pending = None
                pos = self._new_position(side, fill_qty, fill_price, now, res.order_id)
                self._pos = pos
                await self._risk.register(self.symbol, side)
            await self._announce_and_protect(pos, ctx.atr, filters, ctx)
            return True
        finally:
            self._busy = False

    def _entry_not_recorded(self, row: int) -> None:
        """Write-ahead: the entry's request must be in the journal's file before the order
        leaves. A process killed after sending an entry whose row was still queued left a round
        trip no restart could find (found by review, 2026-12-03). A journal that cannot take the
        row in time (another process holding its lock) gets no entry: nothing is at stake yet,
        so the bot fails closed."""
        self._pending = None
        now = self._clock.now_ms()
        self._journal.record_order_result(row, time_ms=now, status="REJECTED", reason="not sent: journal")
        msg = f"entry not sent: its request was not in the journal within {ENTRY_RECORD_WAIT_S:g}s"
        log.error("%s: %s", self.symbol, msg)
        self._journal.record_event(now, "entry_not_sent", self.symbol, msg)

    async def _venue_settings(self) -> None:
        """SPEC §8.4 step 6 and §13 row 19: the leverage and ISOLATED margin an entry trades at
        (an adapter may skip what the venue's last word already says)."""
        await self._ex.set_leverage(self.symbol, self._leverage)
        try:
            await self._ex.set_isolated_margin(self.symbol)
        except ExchangeError as exc:
            if exc.code != NO_NEED_TO_CHANGE_MARGIN_TYPE:
                raise

    async def prepare_venue(self) -> None:
        """Live start-up, flat: the venue's leverage and margin type set now, so that the first
        entry does not spend two round trips on them between its signal and its order (every
        later entry finds them set in its position read). A failure is not fatal: the entry
        sets them as before, and fails closed there."""
        if self._pos is not None or self._pending is not None:
            return
        try:
            await self._venue_settings()
        except ExchangeError as exc:
            log.warning(
                "%s: leverage/margin type not set at start-up (%s); the entry sets them", self.symbol, exc
            )

    async def _cancel_stale_protection(self) -> bool:
        """Before an entry on a flat symbol: the protective orders a closed position left open
        are cancelled now (those whose cancel failed, and, when a placement of this bot's may
        exist untracked since the last clean check, every open order: e.g. a duplicate TP of a
        placement that timed out and could not be found). Not after every close: the books are
        read only when something may be there, so an entry after a stop-loss or take-profit
        costs no extra round trip. One still open would act on the new position
        (an old TP or SL closing it at the old position's price), so the entry waits while any
        is left (fail closed)."""
        for algo_id in sorted(self._to_cancel):
            if await self._cancel_algo(algo_id, "left by a closed position, before a new entry"):
                self._to_cancel.discard(algo_id)
        if not self._to_cancel and self._untracked:
            try:
                await self._cancel_orphans("before a new entry")
            except ExchangeError as exc:
                log.warning("%s: entry skipped: orphan check failed: %s", self.symbol, exc)
                return False
        if self._to_cancel:
            log.warning(
                "%s: entry skipped: protective orders %s of a closed position could not be cancelled",
                self.symbol,
                sorted(self._to_cancel),
            )
            return False
        return True

    async def _entry_fill(self, res: OrderResult, side: Side) -> tuple[float, float, bool]:
        """(average price, executed quantity, final) of the entry order.

        The REST answer when it is FILLED; else (ACK, partial, expired, unknown) the stream for up
        to ``ENTRY_FILL_WAIT_S``, then the order queried by id (SPEC §13 gap: entry price = fill,
        not candle close). ``final`` is False while the order may still fill.
        """
        if res.executed_qty > 0 and res.avg_price > 0 and res.status is OrderStatus.FILLED:
            return res.avg_price, res.executed_qty, True
        acc = self._entry_acc.get(res.order_id)
        if res.status in _OPEN and not (acc is not None and acc.final):
            evt = self._entry_waiters.setdefault(res.order_id, asyncio.Event())
            try:
                await self._clock.wait_for(evt.wait(), ENTRY_FILL_WAIT_S)
            except TimeoutError:
                pass
            finally:
                self._entry_waiters.pop(res.order_id, None)
        try:
            o = await self._ex.get_order(self.symbol, order_id=res.order_id)
            return o.avg_price, o.executed_qty, o.status not in _OPEN
        except ExchangeError as exc:
            log.warning("%s: entry order query failed: %s", self.symbol, exc)
        acc = self._entry_acc.get(res.order_id)
        if acc is not None and acc.qty > 0:
            return acc.avg_price, acc.qty, acc.final
        if res.executed_qty > 0 and res.avg_price > 0:
            return res.avg_price, res.executed_qty, res.status not in _OPEN
        try:
            pos_ex = await self._ex.position(self.symbol)
        except ExchangeError as exc:  # outcome unknown: kept pending (registered), resolved by id
            log.warning("%s: position read after the entry failed: %s", self.symbol, exc)
            return 0.0, 0.0, False
        if pos_ex is not None and pos_ex.side is side:
            return pos_ex.entry_price, pos_ex.quantity, True
        return 0.0, 0.0, res.status not in _OPEN

    def _stops(self, ref: float, atr: float, side: Side, filters: SymbolFilters) -> tuple[float, float]:
        """Tick-rounded ATR stops around ``ref``, kept at least one tick on the right side."""
        sl, tp = atr_stops(ref, atr, side, self._params)
        tick = filters.tick_size
        sl, tp = round_price(sl, tick), round_price(tp, tick)
        if side is Side.LONG:
            sl = min(sl, round_price(ref - tick, tick))
            tp = max(tp, round_price(ref + tick, tick))
        else:
            sl = max(sl, round_price(ref + tick, tick))
            tp = min(tp, round_price(ref - tick, tick))
        return max(sl, tick), max(tp, tick)


_OPEN = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
