"""Recovery and reconciliation: start-up adoption, REST resync, SYNC closes from income history.

Why here: these are the paths where the exchange, not the stream, is the source of truth.
"""

from __future__ import annotations

import asyncio
import math

from perpbot.domain.types import (
    AlgoStatus,
    ClosedTrade,
    CloseReason,
    ConditionalOrder,
    OrderType,
    Position,
)
from perpbot.engine.bot_base import (
    FALLBACK_STOP_FRACTION,
    START_ATTEMPTS,
    START_BACKOFF_S,
    BotBase,
    LocalPosition,
    is_transient,
    log,
)
from perpbot.engine.context import CandleContext
from perpbot.engine.notifier import (
    kill_switch_message,
    recovered_message,
)
from perpbot.exchange.errors import ExchangeError
from perpbot.exchange.filters import round_price


class RecoveryMixin(BotBase):
    """Recovery and reconciliation: start-up adoption, REST resync, SYNC closes from income history."""

    async def start(self, ctx: CandleContext | None = None) -> None:
        """Recovery (SPEC §8.2 step 2 with §13 rows 1, 12, 27): adopt or clean up, then listen."""
        if not self._subscribed:
            self._ex.subscribe(self.on_event)
            self._subscribed = True
        p = self._params
        log.info(
            "START %s leverage=%dx sl_mult=%s tp_mult=%s threshold=%s adx=%s vol=%s symbols=%d",
            self.symbol,
            self._leverage,
            p.atr_sl_mult,
            p.atr_tp_mult,
            p.signal_threshold,
            p.adx_threshold,
            p.vol_multiplier,
            self._n,
        )
        now = self._clock.now_ms()
        reason = self.kill_switch.boot(now, reset=self.symbol in self._cfg.reset_kill_switch)
        if reason:
            log.warning("%s: kill switch is active at start: %s", self.symbol, reason)
            await self._notifier.notify("kill_switch", kill_switch_message(self.symbol, reason))
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                await self._recover(ctx)
                return
            except ExchangeError as exc:
                if not is_transient(exc) or attempt == START_ATTEMPTS:
                    raise
                delay = START_BACKOFF_S * 2 ** (attempt - 1)
                msg = f"start-up attempt {attempt} failed ({exc}); retrying in {delay:g}s"
                log.warning("%s: %s", self.symbol, msg)
                self._journal.record_event(self._clock.now_ms(), "start_retry", self.symbol, msg)
                await self._clock.sleep(delay)

    async def _recover(self, ctx: CandleContext | None) -> None:
        """One start-up attempt: filters, position, then adopt or clean up. Safe to repeat (a
        failed attempt's half-adopted position is read again from the exchange)."""
        self._pos = None
        await self._symbol_filters()
        pos_ex = await self._ex.position(self.symbol)
        if pos_ex is None:
            await self._cancel_orphans("flat start")
            if self._risk.is_open(self.symbol):
                await self._release_stale("flat start")
            return
        await self._adopt(pos_ex, ctx, announce=True)

    async def _release_stale(self, why: str) -> None:
        """The risk registry lists this symbol but nothing is open: release with PnL 0."""
        await self._risk.close(self.symbol, 0.0)
        self._journal.record_event(
            self._clock.now_ms(), "risk_release", self.symbol, f"{why}: stale registration released (PnL 0)"
        )

    async def _adopt(self, pos_ex: Position, ctx: CandleContext | None, *, announce: bool) -> LocalPosition:
        """Take over an exchange position: register it, restore or re-place its SL/TP."""
        now = self._clock.now_ms()
        entry_time, entry_oid, entry_fee = now, 0, None
        # The journaled entry belongs to this position only if it is on the same side and no
        # trade of the symbol closed after it (else it is an old round trip's entry, and its time
        # would pull earlier trades' funding and income into this one).
        rec = self._journal.last_order(self.symbol, ("ENTRY",))
        last = self._journal.recent_trades(self.symbol, 1)
        if (
            rec is not None
            and rec.order_id
            and rec.side == pos_ex.side.entry_order_side.value
            and (not last or last[0].exit_time_ms <= rec.time_ms)
        ):
            entry_time, entry_oid = rec.time_ms, rec.order_id
            entry_fee = self._journal.order_commission(self.symbol, rec.order_id)
        pos = LocalPosition(
            side=pos_ex.side,
            qty=pos_ex.quantity,
            entry_price=pos_ex.entry_price,
            entry_time_ms=entry_time,
            entry_order_id=entry_oid,
            entry_fee=entry_fee,
            adopted=True,
        )
        self._pos = pos
        await self._risk.register(self.symbol, pos.side)
        self._journal.record_event(
            now,
            "position_adopted",
            self.symbol,
            f"adopted {pos.side.value} qty {pos.qty} entry {pos.entry_price}",
            {"entry_order_id": entry_oid, "entry_time_ms": entry_time},
        )
        replaced = await self._restore_protection(pos, ctx)
        log.info(
            "RECOVER %s %s entry=%.6f qty=%s sl=%s tp=%s replaced=%s",
            self.symbol,
            pos.side.value,
            pos.entry_price,
            pos.qty,
            pos.sl_price,
            pos.tp_price,
            replaced,
        )
        if announce:
            await self._notifier.notify(
                "info", recovered_message(self.symbol, pos.side, pos.entry_price, pos.qty, replaced)
            )
        if replaced and self._pos is pos:
            await self._protect(pos, want_sl="SL" in replaced, want_tp="TP" in replaced)
        return pos

    async def _restore_protection(self, pos: LocalPosition, ctx: CandleContext | None) -> list[str]:
        """Find existing SL/TP (algo *and* normal book); compute prices for the missing ones.

        Returns the kinds that must be (re-)placed; their prices are set on ``pos``.
        """
        exit_side = pos.side.exit_order_side
        algo = await self._ex.open_conditional_orders(self.symbol)
        normal = await self._ex.open_orders(self.symbol)
        extra: list[ConditionalOrder] = []
        for o in algo:
            if o.side is not exit_side or o.status is not AlgoStatus.NEW:
                extra.append(o)
            elif o.type is OrderType.STOP_MARKET and not pos.sl_id:
                pos.sl_id, pos.sl_price = o.algo_id, o.trigger_price
            elif o.type is OrderType.TAKE_PROFIT_MARKET and not pos.tp_id:
                pos.tp_id, pos.tp_price = o.algo_id, o.trigger_price
            else:
                extra.append(o)
        legacy_sl = legacy_tp = False
        legacy: list[int] = []
        for n in normal:
            if n.side is exit_side and n.type is OrderType.STOP_MARKET:
                legacy_sl = True
                legacy.append(n.order_id)
            elif n.side is exit_side and n.type is OrderType.TAKE_PROFIT_MARKET:
                legacy_tp = True
                legacy.append(n.order_id)
        pos.legacy_ids = tuple(legacy)
        for o in extra:  # duplicates or wrong-side leftovers: cancel by id
            await self._cancel_algo(o.algo_id, "duplicate/foreign protective order at recovery")
        missing: list[str] = []
        if not pos.sl_id and not legacy_sl:
            missing.append("SL")
        if not pos.tp_id and not legacy_tp:
            missing.append("TP")
        if not missing:
            return []
        filters = await self._symbol_filters()
        atr = ctx.atr if ctx is not None else float("nan")
        if math.isfinite(atr) and atr > 0:
            sl, tp = self._stops(pos.entry_price, atr, pos.side, filters)
            source = "ATR"
        else:
            sl, tp = self._journaled_triggers(pos)
            source = "journal"
            frac = FALLBACK_STOP_FRACTION * pos.entry_price
            if not sl:
                sl = round_price(pos.entry_price - pos.side.sign * frac, filters.tick_size)
                source = "fallback"
            if not tp:
                tp = round_price(pos.entry_price + pos.side.sign * frac, filters.tick_size)
                source = "fallback"
        if "SL" in missing:
            pos.sl_price = sl
        if "TP" in missing:
            pos.tp_price = tp
        self._journal.record_event(
            self._clock.now_ms(),
            "protection_missing",
            self.symbol,
            f"missing {', '.join(missing)}; re-placing from {source}",
            {"sl": sl, "tp": tp},
        )
        return missing

    def _journaled_triggers(self, pos: LocalPosition) -> tuple[float, float]:
        sl = tp = 0.0
        for o in self._journal.orders(self.symbol):
            if o.time_ms >= pos.entry_time_ms and o.trigger_price:
                if o.kind == "SL":
                    sl = o.trigger_price
                elif o.kind == "TP":
                    tp = o.trigger_price
        return sl, tp

    async def _resync(self, pos_ex: Position, ctx: CandleContext | None) -> LocalPosition:
        """Make the local position agree with the exchange's (adopt, or fix the quantity)."""
        pos = self._pos
        if pos is None or pos.side is not pos_ex.side:
            if pos is not None:
                log.error("%s: local %s but exchange %s; re-adopting", self.symbol, pos.side, pos_ex.side)
                self._pos = None
            return await self._adopt(pos_ex, ctx, announce=True)
        filters = await self._symbol_filters()
        if abs(pos.qty - pos_ex.quantity) > filters.step_size / 2:
            log.warning(
                "%s: local qty %s, exchange qty %s; using the exchange's",
                self.symbol,
                pos.qty,
                pos_ex.quantity,
            )
            pos.qty = pos_ex.quantity
        return pos

    async def reconcile(self) -> None:
        """Periodic REST check (SPEC §13 rows 5, 6): SYNC close of phantom positions, adoption of
        unknown ones, and re-placement of missing protective orders."""
        if self._busy:
            return
        with self._clock.scope():
            await self._reconcile()

    async def _reconcile(self) -> None:
        try:
            pos_ex = await self._ex.position(self.symbol)
            if pos_ex is None:
                if self._pos is not None:
                    await self._sync_close("reconcile")
                return
            pos = await self._resync(pos_ex, None)
            if self._busy or self._pos is not pos:
                return
            open_ids = {o.algo_id for o in await self._ex.open_conditional_orders(self.symbol)}
            if pos.sl_id and pos.sl_id not in open_ids:
                pos.sl_id = 0
            if pos.tp_id and pos.tp_id not in open_ids:
                pos.tp_id = 0
            if (not pos.sl_id or not pos.tp_id) and not pos.legacy_ids:
                missing = [k for k, i in (("SL", pos.sl_id), ("TP", pos.tp_id)) if not i]
                self._journal.record_event(
                    self._clock.now_ms(),
                    "protection_missing",
                    self.symbol,
                    f"reconcile: missing {', '.join(missing)}; re-placing",
                )
                await self._protect(pos, want_sl=not pos.sl_id, want_tp=not pos.tp_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            log.exception("%s: reconciliation failed", self.symbol)

    async def _sync_close(self, why: str) -> None:
        """The exchange is flat but we hold a position: close it from income history (SYNC).

        PnL = Σ REALIZED_PNL − Σ |COMMISSION| + Σ FUNDING_FEE of *this* symbol since the entry time,
        every row summed (SPEC §13 rows 5, 6), except executions already accounted to an earlier
        trade (a reverse closes and re-opens within the same millisecond).
        """
        async with self._close_lock:
            pos = self._pos
            if pos is None:
                return
            rows = await self._ex.income_history(
                self.symbol,
                pos.entry_time_ms,
                ("REALIZED_PNL", "COMMISSION", "FUNDING_FEE", "INSURANCE_CLEAR"),
            )
            if self._pos is not pos:
                return
            rp = fees = funding = 0.0
            for r in rows:
                if r.symbol != self.symbol or r.time_ms < pos.entry_time_ms:
                    continue
                if r.trade_id and r.trade_id in self._accounted:
                    continue
                if r.income_type == "REALIZED_PNL":
                    rp += r.income
                elif r.income_type == "COMMISSION":
                    fees += abs(r.income)
                elif r.income_type == "FUNDING_FEE":
                    funding += r.income
                elif r.income_type == "INSURANCE_CLEAR":
                    fees -= r.income  # liquidation clearance fee (negative income)
            qty = pos.qty + pos.closed_qty
            exit_price = pos.entry_price + pos.side.sign * (rp / qty) if qty > 0 else pos.entry_price
            entry_fee = min(self._entry_fee(pos), fees)
            trade = ClosedTrade(
                symbol=self.symbol,
                side=pos.side,
                entry_time_ms=pos.entry_time_ms,
                exit_time_ms=self._clock.now_ms(),
                entry_price=pos.entry_price,
                exit_price=exit_price,
                quantity=qty,
                realized_pnl=rp,
                entry_fee=entry_fee,
                exit_fee=fees - entry_fee,
                funding=funding,
                reason=CloseReason.SYNC,
            )
            self._pos = None
            self._journal.record_event(
                self._clock.now_ms(),
                "sync_close",
                self.symbol,
                f"{why}: exchange flat, local {pos.side.value} {qty}; closed from {len(rows)} income rows",
                {"realized_pnl": rp, "fees": fees, "funding": funding},
            )
            await self._finish(pos, trade)
            await self._cancel_leftovers()
