"""Recovery and reconciliation: start-up adoption, REST resync, SYNC closes from income history.

Why here: these are the paths where the exchange, not the stream, is the source of truth.
"""

from __future__ import annotations

import math

from perpbot.domain.types import (
    AlgoStatus,
    CloseReason,
    ConditionalOrder,
    Fill,
    OrderType,
    Position,
)
from perpbot.engine.bot_base import (
    REMEMBER,
    START_ATTEMPTS,
    START_BACKOFF_S,
    BotBase,
    EntryAcc,
    LocalPosition,
    bounded_put,
    exec_key,
    execution_of_fill,
    is_transient,
    log,
)
from perpbot.engine.context import CandleContext
from perpbot.engine.notifier import (
    kill_switch_message,
    recovered_message,
)
from perpbot.exchange.errors import ExchangeError

RECONCILE_ATTEMPTS = 3


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
        self._load_journaled_cids()
        reason = self.kill_switch.boot(now, reset=self.symbol in self._cfg.reset_kill_switch)
        if reason:
            log.warning("%s: kill switch is active at start: %s", self.symbol, reason)
            await self._notifier.notify("kill_switch", kill_switch_message(self.symbol, reason))
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                await self._recover(ctx)
                self._restore_watches()  # trades an earlier process booked may still be amended
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
            await self._book_unbooked_entry(ctx.atr if ctx is not None else math.nan)
            await self._cancel_orphans("flat start")
            if self._risk.is_open(self.symbol) and self._pending is None:
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
        pos = LocalPosition(
            side=pos_ex.side,
            qty=pos_ex.quantity,
            entry_price=pos_ex.entry_price,
            entry_time_ms=now,
            entry_qty=pos_ex.quantity,
            adopted=True,
        )
        await self._journaled_entry(pos)
        stray = [e for e in self._stray_entries if e.side is pos.side.entry_order_side]
        if stray:  # executions of our entry orders that no position took: this one's
            self._stray_entries.clear()
            pos.entry_order_id = stray[-1].order_id
            pos.entry_time_ms = min(e.time_ms for e in stray)
            pos.entry_exec_qty = sum(e.qty for e in stray)
            pos.entry_exec_fee = pos.entry_fee = sum(e.commission for e in stray)
            pos.entry_trade_id = max(e.trade_id for e in stray)
        if not pos.entry_exec_qty:
            await self._entry_executions_from_rest(pos)
        p = self._pending
        entry_atr = float("nan")
        if p is not None and p.side is pos.side:
            # The entry whose outcome was unknown is this position: resolved (never adopted twice).
            self._pending = None
            entry_atr = p.atr  # its stops, when no candle is at hand (reconcile)
            if p.order_id:
                pos.entry_order_id = p.order_id
                pos.entry_time_ms = min(pos.entry_time_ms, p.time_ms)
                self._entry_acc.setdefault(p.order_id, EntryAcc())
        if pos.entry_trade_id:
            await self._earlier_partial_closes(pos)
        self._pos = pos
        await self._risk.register(self.symbol, pos.side)
        self._journal.record_event(
            now,
            "position_adopted",
            self.symbol,
            f"adopted {pos.side.value} qty {pos.qty} entry {pos.entry_price}",
            {"entry_order_id": pos.entry_order_id, "entry_time_ms": pos.entry_time_ms},
        )
        await self._take_parked(pos)
        if self._pos is not pos:  # the parked executions closed it
            return pos
        replaced = await self._restore_protection(pos, ctx, entry_atr)
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
        if self._pos is not pos:
            return pos
        if not pos.sl_price or not pos.tp_price:
            await self._emergency_close(
                pos, [k for k, v in (("SL", pos.sl_price), ("TP", pos.tp_price)) if not v]
            )
        elif replaced:
            await self._protect(pos, want_sl="SL" in replaced, want_tp="TP" in replaced)
        await self._ensure_protection(pos)  # undersized stops found at recovery are replaced
        return pos

    async def _entry_executions_from_rest(self, pos: LocalPosition) -> None:
        """The executions that opened an adopted position, from ``userTrades``: the newest
        unaccounted ones on its entry side that make up its quantity (their events were lost,
        or they came after the bot gave up on them). They give its entry time and fee."""
        since = pos.entry_time_ms - 86_400_000
        try:
            fills = await self._ex.user_trades(self.symbol, since)  # type: ignore[attr-defined]
        except ExchangeError:
            return
        side = pos.side.entry_order_side
        mine: list[Fill] = []
        qty = 0.0
        for f in sorted(fills, key=lambda f: -f.trade_id):
            if qty >= pos.qty - self._tol():
                break
            if f.side is side and exec_key(f.trade_id) not in self._accounted:
                mine.append(f)
                qty += f.quantity
        if not mine or abs(qty - pos.qty) > self._tol():
            return
        self._journal_rest_fills(mine)
        self._account([exec_key(f.trade_id) for f in mine])
        pos.entry_order_id = mine[0].order_id
        pos.entry_time_ms = min(f.time_ms for f in mine)
        pos.entry_exec_qty = qty
        pos.entry_exec_fee = pos.entry_fee = sum(f.commission for f in mine)
        pos.entry_trade_id = max(f.trade_id for f in mine)
        self._entry_acc.setdefault(pos.entry_order_id, EntryAcc())

    async def _earlier_partial_closes(self, pos: LocalPosition) -> None:
        """Closing executions of this position that a previous process already counted.

        A partial close (a deleverage, the first fills of a stop) is accounted at once and that
        is persisted, but its quantity and PnL lived in the dead process's position: without them
        the trade would be booked short of them, and, being accounted, they would never be
        counted again (found by the chaos test, issue 10 §4). Every accounted execution on the
        closing side after the entry's last one is this position's: no trade of the symbol was
        booked after its entry, and trade ids grow with time.
        """
        try:
            fills = await self._retry(lambda: self._ex.user_trades(self.symbol, pos.entry_time_ms))
        except ExchangeError as exc:
            log.warning(
                "%s: earlier partial closes unreadable (%s); the trade may lack them", self.symbol, exc
            )
            return
        side = pos.side.exit_order_side
        after = [f for f in fills if f.side is side and f.trade_id > pos.entry_trade_id]
        mine = [f for f in after if exec_key(f.trade_id) in self._accounted]
        for f in after:
            # Closing executions nobody counted (the process died before their events): the
            # position takes them as parked executions (``_take_parked``), so its trade has them.
            parked = any(p.trade_id == f.trade_id for p in self._parked)
            if exec_key(f.trade_id) not in self._accounted and not parked:
                self._parked.append(execution_of_fill(f))
        if not mine:
            return
        q = sum(f.quantity for f in mine)
        pos.entry_qty = max(pos.entry_qty, pos.qty + q)
        pos.closed_qty += q
        pos.closed_notional += sum(f.quantity * f.price for f in mine)
        pos.closed_rp += sum(f.realized_pnl for f in mine)
        pos.closed_fee += sum(f.commission for f in mine)
        pos.close_orders.update(f.order_id for f in mine)
        msg = f"{q} closed before the restart ({len(mine)} executions) stays in this position's trade"
        log.info("%s: %s", self.symbol, msg)
        self._journal.record_event(self._clock.now_ms(), "partial_close_restored", self.symbol, msg)

    async def _journaled_entry(self, pos: LocalPosition) -> None:
        """Entry time, price and fee of an adopted position from the journal (defect 15).

        The journaled entry belongs to this position only if it is on the same side and no trade
        booked it (``_entry_booked``; else it is an old round trip's entry). Its executions are
        found by *client id*, so a crash between the order call and the journaled answer loses
        nothing, and by order id, so do those read from ``userTrades`` when their reports never
        came (a dead process counted them; their fee is only in the journal): entry time = first
        execution, price = their average when they make up the whole position, fee = their
        commission. Without journaled executions the order is asked for by client id.
        """
        rec = self._journal.last_order(self.symbol, ("ENTRY",))
        if rec is None or rec.side != pos.side.entry_order_side.value or self._entry_booked(rec):
            return
        order_id = rec.order_id or 0
        if not order_id and rec.client_id:  # its answer never reached the journal: the venue's
            try:
                order_id = (await self._ex.get_order(self.symbol, client_order_id=rec.client_id)).order_id
            except ExchangeError:
                order_id = 0
            if order_id and self._journal.trade_of_entry(self.symbol, order_id):
                return  # an old round trip's, booked by a process that asked the venue too
        pos.entry_time_ms = rec.time_ms
        fills = self._journal.fills_of_client_id(self.symbol, rec.client_id) if rec.client_id else []
        if order_id:  # and those stored from ``userTrades`` (no report came), by order id
            known = {f[1] for f in fills}
            fills += [f for f in self._journal.fills_of_order(self.symbol, order_id) if f[1] not in known]
        if fills:
            qty = sum(f[2] for f in fills)
            pos.entry_time_ms = min(f[0] for f in fills)
            pos.entry_fee = sum(f[4] for f in fills)
            pos.entry_exec_qty, pos.entry_exec_fee = qty, pos.entry_fee
            pos.entry_trade_id = max(f[1] for f in fills)
            if abs(qty - pos.qty) <= self._tol():
                pos.entry_price = sum(f[2] * f[3] for f in fills) / qty
            self._account([exec_key(f[1]) for f in fills])
        pos.entry_order_id = order_id  # the trade names it: a later restart knows it booked
        if pos.entry_order_id:
            self._entry_acc.setdefault(pos.entry_order_id, EntryAcc())

    async def _restore_protection(
        self, pos: LocalPosition, ctx: CandleContext | None, entry_atr: float = float("nan")
    ) -> list[str]:
        """Find existing SL/TP (algo *and* normal book); compute prices for the missing ones.

        Returns the kinds that must be (re-)placed; their prices are set on ``pos``. Prices come
        from the ATR of the preloaded candles (``ctx``, the last closed one), else from the ATR
        its pending entry was sent with (``entry_atr``), else from the trigger prices journaled
        for this entry; with none, the price stays 0 and the caller closes the position (fail
        closed: no made-up stop).
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
                continue
            pos.algo_ids.add(o.algo_id)
            bounded_put(self._algo_owner, o.algo_id, pos, REMEMBER)
            kind = CloseReason.SL if o.type is OrderType.STOP_MARKET else CloseReason.TP
            bounded_put(self._algo_kind, o.algo_id, kind, REMEMBER)
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
        if legacy_sl:
            pos.sl_price = pos.sl_price or -1.0  # protected by the legacy order (price unknown)
        if legacy_tp:
            pos.tp_price = pos.tp_price or -1.0
        if not missing:
            return []
        filters = await self._symbol_filters()
        atr = ctx.atr if ctx is not None else entry_atr
        if math.isfinite(atr) and atr > 0:
            sl, tp = self._stops(pos.entry_price, atr, pos.side, filters)
            source = "ATR of the preloaded candles" if ctx is not None else "ATR of its entry"
        else:
            sl, tp = self._journaled_triggers(pos)
            source = "journal"
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
