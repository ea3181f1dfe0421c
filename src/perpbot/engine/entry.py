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
    LocalPosition,
    log,
)
from perpbot.engine.context import CandleContext
from perpbot.engine.notifier import (
    entry_message,
)
from perpbot.engine.sizing import position_size
from perpbot.exchange.errors import NO_NEED_TO_CHANGE_MARGIN_TYPE, ExchangeError, ExchangeUnavailable
from perpbot.exchange.filters import round_price
from perpbot.strategy.signal import atr_stops


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
                await self._ex.set_leverage(self.symbol, self._leverage)
                try:
                    await self._ex.set_isolated_margin(self.symbol)
                except ExchangeError as exc:
                    if exc.code != NO_NEED_TO_CHANGE_MARGIN_TYPE:
                        raise
                now = self._clock.now_ms()
                cid = self._cid("E")
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
                try:
                    res = await self._ex.market_order(
                        self.symbol, side.entry_order_side, qty, client_order_id=cid
                    )
                except ExchangeError as exc:
                    self._journal_error(row, exc)
                    log.warning("%s: entry order failed: %s", self.symbol, exc)
                    if isinstance(exc, ExchangeUnavailable):  # outcome unknown: look
                        pos_ex = await self._ex.position(self.symbol)
                        if pos_ex is not None:
                            await self._adopt(pos_ex, ctx, announce=True)
                    return False
                self._journal_result(row, res)
                fill_price, fill_qty = await self._entry_fill(res, side)
                if fill_qty <= 0 or fill_price <= 0:
                    msg = f"entry order {res.order_id} reported no fill ({res.status.value})"
                    log.warning("%s: %s", self.symbol, msg)
                    self._journal.record_event(self._clock.now_ms(), "entry_unfilled", self.symbol, msg)
                    return False
                pos = LocalPosition(
                    side=side,
                    qty=fill_qty,
                    entry_price=fill_price,
                    entry_time_ms=now,
                    entry_order_id=res.order_id,
                )
                self._pos = pos
                await self._risk.register(self.symbol, side)
            sl, tp = self._stops(fill_price, ctx.atr, side, filters)
            pos.sl_price, pos.tp_price = sl, tp
            log.info(
                "ENTRY %s %s price=%.6f qty=%s sl=%.6f tp=%.6f leverage=%dx",
                self.symbol,
                side.value,
                fill_price,
                fill_qty,
                sl,
                tp,
                self._leverage,
            )
            await self._notifier.notify(
                "entry",
                entry_message(
                    self.symbol,
                    side,
                    entry_price=fill_price,
                    qty=fill_qty,
                    leverage=self._leverage,
                    sl=sl,
                    tp=tp,
                    rsi=ctx.rsi,
                    macd_hist=ctx.macd_hist,
                    atr=ctx.atr,
                ),
            )
            await self._protect(pos, want_sl=True, want_tp=True)
            return True
        finally:
            self._busy = False

    async def _entry_fill(self, res: OrderResult, side: Side) -> tuple[float, float]:
        """The entry's average fill price and quantity: the REST result, else the fill events,
        else the exchange's position (SPEC §13 gap: entry price = fill, not candle close)."""
        if res.executed_qty > 0 and res.avg_price > 0 and res.status is not OrderStatus.NEW:
            return res.avg_price, res.executed_qty
        ef = self._tracker.entry_fill(res.order_id)
        if ef is None:
            evt = self._entry_waiters.setdefault(res.order_id, asyncio.Event())
            try:
                await self._clock.wait_for(evt.wait(), ENTRY_FILL_WAIT_S)
            except TimeoutError:
                pass
            finally:
                self._entry_waiters.pop(res.order_id, None)
            ef = self._tracker.entry_fill(res.order_id)
        if ef is not None:
            return ef.avg_price, ef.qty
        pos_ex = await self._ex.position(self.symbol)
        if pos_ex is not None and pos_ex.side is side:
            return pos_ex.entry_price, pos_ex.quantity
        return 0.0, 0.0

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
