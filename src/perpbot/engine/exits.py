"""Exit accounting: our own market closes, close fills matched to the position, trades booked.

Why here: every path that ends a position (trigger, reverse, emergency, liquidation, late
fills) books its trade through ``_finish`` so PnL reaches journal, risk and kill switch once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

from perpbot.domain.types import (
    ClosedTrade,
    CloseReason,
    OrderType,
)
from perpbot.engine.bot_base import (
    CLOSE_WAIT_S,
    HOUR_MS,
    REMEMBER,
    BotBase,
    LocalPosition,
    log,
)
from perpbot.engine.close_tracker import CloseFill, bounded_put
from perpbot.engine.notifier import (
    alert_message,
    close_message,
    kill_switch_message,
)
from perpbot.exchange.errors import ExchangeError


class ExitMixin(BotBase):
    """Exit accounting: our own market closes, close fills matched to the position, trades booked."""

    async def _close_market(self, pos: LocalPosition, reason: CloseReason) -> bool | None:
        """Reduce-only MARKET close, then wait for its fills (10 s).

        True = confirmed by the event; False = timed out, released with PnL 0 and parked as
        "late"; None = the order was not accepted (position unchanged).
        """
        evt = asyncio.Event()
        self._closed_evt = evt
        cid = self._cid("X" if reason is CloseReason.EMERGENCY else "R")
        bounded_put(self._own_cids, cid, reason, REMEMBER)
        exit_side = pos.side.exit_order_side
        row = self._journal.record_order_request(
            time_ms=self._clock.now_ms(),
            symbol=self.symbol,
            kind=reason.value,
            order_type="MARKET",
            side=exit_side.value,
            qty=pos.qty,
            client_id=cid,
            reason="reduce-only close",
        )
        try:
            res = await self._ex.market_order(
                self.symbol, exit_side, pos.qty, reduce_only=True, client_order_id=cid
            )
        except ExchangeError as exc:
            self._journal_error(row, exc)
            log.error("%s: %s close failed: %s", self.symbol, reason.value, exc)
            return None
        self._journal_result(row, res)
        bounded_put(self._own_orders, res.order_id, reason, REMEMBER)
        if self._pos is not pos:
            return True  # the fills were handled before the REST answer came back
        try:
            await self._clock.wait_for(evt.wait(), CLOSE_WAIT_S)
            return True
        except TimeoutError:
            pass
        async with self._close_lock:
            if self._pos is not pos:
                return True
            self._pos = None
            bounded_put(self._late, res.order_id, pos, REMEMBER)
            msg = (
                f"{reason.value} close {res.order_id} not confirmed within {CLOSE_WAIT_S:g}s: "
                "released (PnL 0)"
            )
            log.warning("%s: %s", self.symbol, msg)
            self._journal.record_event(
                self._clock.now_ms(), "close_timeout", self.symbol, msg, {"order_id": res.order_id}
            )
            await self._risk.close(self.symbol, 0.0)
        await self._notifier.notify("alert", alert_message(self.symbol, msg))
        return False

    async def _on_close_fill(self, cf: CloseFill) -> None:
        """Idempotent close handling under the per-bot close lock (SPEC §8.5, §13 rows 7, 9)."""
        async with self._close_lock:
            pos = self._pos
            late = self._late.pop(cf.order_id, None)
            if late is not None and late is not pos:
                await self._record_late(late, cf)
                return
            if pos is None:
                log.info(
                    "%s: close fill of order %s while flat: already recorded, ignored",
                    self.symbol,
                    cf.order_id,
                )
                return
            for tid in cf.trade_ids:
                bounded_put(self._accounted, str(tid), None, REMEMBER)
            filters = self._filters
            tol = filters.step_size / 2 if filters is not None else 1e-12
            if cf.qty < pos.qty - tol and not cf.liquidation:
                pos.qty = round(pos.qty - cf.qty, 12)
                pos.closed_qty += cf.qty
                pos.closed_notional += cf.qty * cf.avg_price
                pos.closed_rp += cf.realized_pnl_sum
                pos.closed_fee += cf.commission_sum
                msg = f"partial close {cf.qty} of order {cf.order_id}; {pos.qty} left"
                log.info("%s: %s", self.symbol, msg)
                self._journal.record_event(self._clock.now_ms(), "partial_close", self.symbol, msg)
                return
            reason = self._classify(cf, pos)
            self._pos = None
            trade = await self._build_trade(pos, cf, reason)
            await self._finish(pos, trade, triggered_algo=self._triggered_algo(pos, reason))

    def _classify(self, cf: CloseFill, pos: LocalPosition) -> CloseReason:
        """Why a position closed: liquidation, our own market close, the triggered algo order,
        the original type, else the nearest stored SL/TP price (SPEC §13 row 3), else MANUAL."""
        if cf.liquidation:
            return CloseReason.LIQUIDATION
        reason = self._own_cids.get(cf.client_order_id) if cf.client_order_id else None
        if reason is None:
            reason = self._own_orders.get(cf.order_id) or self._triggered.get(cf.order_id)
        if reason is not None:
            return reason
        for t in (cf.original_type, cf.order_type):
            if t is OrderType.STOP_MARKET:
                return CloseReason.SL
            if t is OrderType.TAKE_PROFIT_MARKET:
                return CloseReason.TP
        if pos.sl_price > 0 or pos.tp_price > 0:
            d_sl = abs(cf.avg_price - pos.sl_price) if pos.sl_price > 0 else math.inf
            d_tp = abs(cf.avg_price - pos.tp_price) if pos.tp_price > 0 else math.inf
            return CloseReason.SL if d_sl <= d_tp else CloseReason.TP
        return CloseReason.MANUAL

    def _triggered_algo(self, pos: LocalPosition, reason: CloseReason) -> int:
        if reason is CloseReason.SL:
            return pos.sl_id
        if reason is CloseReason.TP:
            return pos.tp_id
        return 0

    async def _build_trade(self, pos: LocalPosition, cf: CloseFill, reason: CloseReason) -> ClosedTrade:
        qty = pos.closed_qty + cf.qty
        exit_price = (pos.closed_notional + cf.qty * cf.avg_price) / qty if qty > 0 else cf.avg_price
        exit_time = cf.time_ms or self._clock.now_ms()
        funding = clearance = 0.0
        # Funding settles on whole UTC hours (1 h / 4 h / 8 h intervals on Binance): a position
        # that spans no whole hour paid none, and only a liquidation has a clearance fee. This
        # skips most income-history calls of short trades (a REST round trip in live).
        first_hour = -(-pos.entry_time_ms // HOUR_MS) * HOUR_MS
        if first_hour < exit_time or reason is CloseReason.LIQUIDATION:
            funding, clearance = await self._income_since_entry(pos, exit_time)
        return ClosedTrade(
            symbol=self.symbol,
            side=pos.side,
            entry_time_ms=pos.entry_time_ms,
            exit_time_ms=exit_time,
            entry_price=pos.entry_price,
            exit_price=exit_price,
            quantity=qty,
            realized_pnl=pos.closed_rp + cf.realized_pnl_sum,
            entry_fee=self._entry_fee(pos),
            exit_fee=pos.closed_fee + cf.commission_sum + clearance,
            funding=funding,
            reason=reason,
        )

    def _entry_fee(self, pos: LocalPosition) -> float:
        if pos.entry_order_id:
            ef = self._tracker.entry_fill(pos.entry_order_id)
            if ef is not None:
                return ef.commission_sum
        return pos.entry_fee or 0.0

    async def _income_since_entry(self, pos: LocalPosition, exit_time: int) -> tuple[float, float]:
        """(Σ FUNDING_FEE, Σ liquidation clearance fee) of this symbol while the position was open.

        Funding counts on ``[entry, exit)``: a settlement stamped at the very millisecond of a
        reverse belongs to the *new* position (the old one was closed at that open). A clearance
        fee counts on ``(entry, exit]``: it is the fee of the liquidation that *ended* a position,
        so one stamped at the entry's millisecond is the previous position's (liquidated in the
        candle whose close this entry was sent at) and was already booked with that trade. The
        rows used are remembered so that a later SYNC close never counts them twice.
        """
        try:
            rows = await self._ex.income_history(
                self.symbol, pos.entry_time_ms, ("FUNDING_FEE", "INSURANCE_CLEAR")
            )
        except ExchangeError as exc:
            log.warning("%s: income history unavailable (%s); funding counted as 0", self.symbol, exc)
            return 0.0, 0.0
        funding = clearance = 0.0
        for r in rows:
            if r.symbol != self.symbol or not (pos.entry_time_ms <= r.time_ms < exit_time + 1):
                continue
            if r.income_type == "FUNDING_FEE" and r.time_ms < exit_time:
                funding += r.income
            elif r.income_type == "INSURANCE_CLEAR" and r.time_ms > pos.entry_time_ms:
                clearance -= r.income  # a negative income row is a fee paid
            else:
                continue
            if r.trade_id:
                bounded_put(self._accounted, r.trade_id, None, REMEMBER)
        return funding, clearance

    async def _finish(
        self, pos: LocalPosition, trade: ClosedTrade, *, triggered_algo: int = 0, released: bool = False
    ) -> None:
        """Journal, risk, sibling cancel, kill switch, wake a waiting reverse, notify (in that order)."""
        self._journal.record_trade(trade)
        self.closed_trades.append(trade)
        if released:
            await self._risk.record_pnl(trade.net_pnl, time_ms=trade.exit_time_ms)
        else:
            await self._risk.close(self.symbol, trade.net_pnl, time_ms=trade.exit_time_ms)
        for algo_id in (pos.sl_id, pos.tp_id):
            if algo_id and algo_id != triggered_algo:
                await self._cancel_algo(algo_id, "sibling after close")
        for order_id in pos.legacy_ids:
            with contextlib.suppress(ExchangeError):
                await self._ex.cancel_order(self.symbol, order_id)
        trip = self.kill_switch.record(trade, self._clock.now_ms())
        if self._closed_evt is not None:
            self._closed_evt.set()
        sign = pos.side.sign
        estimated = sign * (trade.exit_price - trade.entry_price) * trade.quantity
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

    async def _record_late(self, pos: LocalPosition, cf: CloseFill) -> None:
        """Fills of a close that was released on timeout: record the real trade, add its PnL."""
        reason = self._classify(cf, pos)
        for tid in cf.trade_ids:
            bounded_put(self._accounted, str(tid), None, REMEMBER)
        trade = await self._build_trade(pos, cf, reason)
        self._journal.record_event(
            self._clock.now_ms(),
            "late_close",
            self.symbol,
            f"late fills of order {cf.order_id} recorded",
            {"net_pnl": trade.net_pnl},
        )
        await self._finish(pos, trade, released=True)
