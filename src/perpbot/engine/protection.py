"""Protection: reduce-only SL/TP placement with retries, re-placement, orphan and sibling cancels.

Why here: "never a position without its stop" is one rule; placing, re-placing and cleaning
up protective orders are its parts, and the emergency close is its last resort.
"""

from __future__ import annotations

import asyncio

from perpbot.domain.client_ids import is_own_client_id
from perpbot.domain.types import (
    CloseReason,
    ConditionalOrder,
    OrderType,
)
from perpbot.engine.bot_base import (
    PROTECT_ATTEMPTS,
    PROTECT_RETRY_S,
    REMEMBER,
    BotBase,
    LocalPosition,
    bounded_put,
    log,
)
from perpbot.engine.notifier import (
    alert_message,
    emergency_message,
)
from perpbot.exchange.errors import (
    MAX_STOP_ORDERS,
    NO_SUCH_ORDER,
    UNKNOWN_ORDER,
    ExchangeError,
    ExchangeUnavailable,
)
from perpbot.exchange.port import protecting


class ProtectionMixin(BotBase):
    """Protection: reduce-only SL/TP placement with retries, re-placement, orphan and sibling cancels."""

    async def _protect(self, pos: LocalPosition, *, want_sl: bool, want_tp: bool) -> bool:
        """Place SL and TP independently, 3 attempts each; emergency close if either fails.
        Its requests (lookups included) pass ahead of history reads (``protecting``)."""
        with protecting():
            return await self._protect_now(pos, want_sl=want_sl, want_tp=want_tp)

    async def _protect_now(self, pos: LocalPosition, *, want_sl: bool, want_tp: bool) -> bool:
        failed: list[str] = []
        for kind, wanted in (("SL", want_sl), ("TP", want_tp)):
            if not wanted or self._pos is not pos:
                continue
            if await self._place_protective(pos, kind) is None:
                failed.append(kind)
        if self._pos is not pos:
            # Closed while we were placing (e.g. the stop fired at once): nothing may stay behind.
            await self._cancel_protection(pos)
            return True
        if failed:
            await self._emergency_close(pos, failed)
            return False
        return True

    async def _place_protective(self, pos: LocalPosition, kind: str) -> ConditionalOrder | None:
        """One SL or TP for the position's *current* full quantity, 3 attempts."""
        otype = OrderType.STOP_MARKET if kind == "SL" else OrderType.TAKE_PROFIT_MARKET
        trigger = pos.sl_price if kind == "SL" else pos.tp_price
        exit_side = pos.side.exit_order_side
        for attempt in range(1, PROTECT_ATTEMPTS + 1):
            qty = pos.qty
            cid = self._cid(kind.lower())
            row = self._journal.record_order_request(
                time_ms=self._clock.now_ms(),
                symbol=self.symbol,
                kind=kind,
                order_type=otype.value,
                side=exit_side.value,
                qty=qty,
                client_id=cid,
                trigger_price=trigger,
                reason=f"attempt {attempt}",
            )
            order: ConditionalOrder | None = None
            try:
                order = await self._ex.place_conditional(
                    self.symbol, otype, exit_side, qty, trigger, reduce_only=True, client_algo_id=cid
                )
            except Exception as exc:  # any failure counts as a failed attempt: never naked
                self._journal_error(row, exc)
                log.warning("%s: %s placement attempt %d failed: %s", self.symbol, kind, attempt, exc)
                if not isinstance(exc, ExchangeError) or isinstance(exc, ExchangeUnavailable):
                    order = await self._find_algo_by_cid(cid)  # it may exist anyway: look it up
                    if order is None:
                        self._untracked = True  # not found (yet): it may still be on the venue
                elif exc.code == MAX_STOP_ORDERS and attempt < PROTECT_ATTEMPTS:
                    await self._free_stop_slots(pos)
            if order is not None:
                self._journal.record_order_result(
                    row, time_ms=self._clock.now_ms(), status=order.status.value, algo_id=order.algo_id
                )
                pos.algo_ids.add(order.algo_id)
                self._orders_dirty = True
                bounded_put(self._algo_owner, order.algo_id, pos, REMEMBER)
                bounded_put(
                    self._algo_kind,
                    order.algo_id,
                    CloseReason.SL if kind == "SL" else CloseReason.TP,
                    REMEMBER,
                )
                if kind == "SL":
                    pos.sl_id = order.algo_id
                else:
                    pos.tp_id = order.algo_id
                return order
            if attempt < PROTECT_ATTEMPTS:
                await self._clock.sleep(PROTECT_RETRY_S)
        return None

    async def _free_stop_slots(self, pos: LocalPosition) -> None:
        """-4045 (10 open conditional orders on the symbol): the book is full. The bot's own
        orders other than the position's current SL and TP protect nothing it tracks (undersized
        stops whose cancel failed, duplicates of placements that timed out): they are cancelled
        so the next attempt fits, instead of closing a protected position as an emergency.
        Orders with another client id (an operator's) are left alone."""
        try:
            open_algo = await self._ex.open_conditional_orders(self.symbol)
        except ExchangeError as exc:
            log.warning("%s: stop book full; reading it failed: %s", self.symbol, exc)
            return
        keep = {pos.sl_id, pos.tp_id}
        stale = sorted(
            o.algo_id
            for o in open_algo
            if o.algo_id not in keep and is_own_client_id(self.symbol, o.client_algo_id)
        )
        msg = f"stop book full (-4045): cancelling {len(stale)} stale own conditional orders"
        log.warning("%s: %s", self.symbol, msg)
        self._journal.record_event(
            self._clock.now_ms(), "stale_stops_cancelled", self.symbol, msg, {"algo_ids": stale}
        )
        for algo_id in stale:
            await self._cancel_algo(algo_id, "stale, the stop book is full")

    async def _find_algo_by_cid(self, cid: str) -> ConditionalOrder | None:
        try:
            for o in await self._ex.open_conditional_orders(self.symbol):
                if o.client_algo_id == cid:
                    return o
        except Exception:
            return None
        return None

    async def _ensure_protection(self, pos: LocalPosition) -> None:
        """Protection covers the full quantity (issue 7 §2.4): a missing SL/TP is re-placed, an
        undersized one (partial entry grown later, recovery, an order we did not size) is
        replaced: the new one first, then the old one cancelled, so the position is never naked.
        Its reads (algo book, position) pass ahead of history reads (``protecting``)."""
        with protecting():
            await self._ensure_protection_now(pos)

    async def _ensure_protection_now(self, pos: LocalPosition) -> None:
        if self._pos is not pos or pos.booked:
            return
        open_algo = {o.algo_id: o for o in await self._ex.open_conditional_orders(self.symbol)}
        if self._pos is not pos or pos.booked:
            return
        tol = self._tol()
        missing: list[str] = []
        undersized: list[int] = []
        for kind, algo_id in (("SL", pos.sl_id), ("TP", pos.tp_id)):
            o = open_algo.get(algo_id) if algo_id else None
            if o is None:
                if algo_id == 0 and pos.legacy_ids:
                    continue  # a legacy conditional order on the normal book protects it
                missing.append(kind)
            elif o.quantity < pos.qty - tol:
                missing.append(kind)
                undersized.append(algo_id)
        if not missing or await self._venue_flat(pos):
            return
        msg = f"protection of {pos.qty}: placing {', '.join(missing)}"
        if undersized:
            msg += f" (replacing undersized {undersized})"
        log.warning("%s: %s", self.symbol, msg)
        self._journal.record_event(self._clock.now_ms(), "protection_resized", self.symbol, msg)
        if await self._protect(pos, want_sl="SL" in missing, want_tp="TP" in missing):
            for algo_id in undersized:
                await self._cancel_algo(algo_id, "undersized protective order replaced")

    async def _venue_flat(self, pos: LocalPosition) -> bool:
        """True when the venue holds no position although ours is open: a protective order that
        triggered and filled, whose last executions we have not seen yet (a TP filled in several
        executions while the stream withheld the last; found by the 180-day chaos run). Nothing
        is left to protect: re-placing the triggered order is rejected (-2021, it would trigger
        at once) and ended in an emergency close of a position that was already closed. The
        withheld executions book the close when they come (the stream's resync, the candle's
        SYNC close, ``reconcile``). A failed read is not "flat": protection is placed (fail
        closed)."""
        try:
            venue = await self._ex.position(self.symbol)
        except ExchangeError as exc:
            log.warning("%s: position read before re-protecting failed (%s); placing", self.symbol, exc)
            return False
        if venue is not None and venue.quantity > self._tol():
            return False
        if self._pos is not pos or pos.booked:
            return True
        msg = f"venue flat while {pos.qty} is open here: nothing re-placed, the close's executions awaited"
        log.warning("%s: %s", self.symbol, msg)
        self._journal.record_event(self._clock.now_ms(), "protection_not_needed", self.symbol, msg)
        return True

    async def _ensure_protection_bg(self, pos: LocalPosition) -> None:
        """Background form (from an event handler): waits until no entry or close is in flight,
        so it is queued, never dropped (defect 12)."""
        await self._idle.wait()
        try:
            await self._ensure_protection(pos)
        except ExchangeError as exc:
            log.warning("%s: protection check failed (%s); reconcile retries", self.symbol, exc)

    async def _emergency_close(self, pos: LocalPosition, failed: list[str]) -> None:
        """SPEC §13 row 12: the position cannot be protected → reduce-only market close + alert.
        The message says what really happened (issue 7 §2.2)."""
        detail = f"{' and '.join(failed)} could not be placed after {PROTECT_ATTEMPTS} attempts"
        log.error("%s: %s; emergency close", self.symbol, detail)
        self._journal.record_event(self._clock.now_ms(), "emergency_close", self.symbol, detail)
        closed = await self._close_market(pos, CloseReason.EMERGENCY)
        if not closed:
            left = pos.qty
            text = (
                f"{detail}; the emergency close was NOT confirmed: {left} still open without its "
                f"{' and '.join(failed)}. Manual action needed."
            )
            self._journal.record_event(self._clock.now_ms(), "manual_action_needed", self.symbol, text)
            await self._notifier.notify(
                "emergency", emergency_message(self.symbol, pos.side, text, success=False)
            )
            return
        await self._notifier.notify(
            "emergency", emergency_message(self.symbol, pos.side, f"{detail}; position closed", success=True)
        )

    async def _reprotect(self, pos: LocalPosition) -> None:
        """A protective order disappeared: re-placed once no entry or close is in flight."""
        await self._idle.wait()
        if self._pos is pos and not pos.booked:
            await self._notifier.notify(
                "alert", alert_message(self.symbol, "a protective order disappeared; re-placing it")
            )
            await self._ensure_protection(pos)

    async def _cancel_orphans(self, why: str) -> None:
        """Flat: every open normal and algo order of the symbol is an orphan (SPEC §13 row 1)."""
        # Both books at once (two reads: one round trip instead of two before a re-entry).
        normal, algo = await asyncio.gather(
            self._ex.open_orders(self.symbol), self._ex.open_conditional_orders(self.symbol)
        )
        if not normal and not algo:
            self._orders_dirty = self._untracked = False
            return
        msg = f"{why}: cancelling {len(normal)} normal and {len(algo)} algo orphan orders"
        log.warning("%s: %s", self.symbol, msg)
        self._journal.record_event(
            self._clock.now_ms(),
            "orphans_cancelled",
            self.symbol,
            msg,
            {"order_ids": [o.order_id for o in normal], "algo_ids": [o.algo_id for o in algo]},
        )
        if normal:
            await self._ex.cancel_all_orders(self.symbol)
        if algo:
            await self._ex.cancel_all_conditional(self.symbol)
        self._orders_dirty = self._untracked = False

    async def _cancel_leftovers(self) -> None:
        """After a close of ours: anything still open for the flat symbol is an orphan."""
        try:
            await self._cancel_orphans("after close")
        except ExchangeError as exc:
            log.warning("%s: leftover cancel failed: %s; reconcile retries", self.symbol, exc)

    async def _cancel_protection(self, pos: LocalPosition) -> None:
        """After a close: every protective order of that position (both SL/TP and any earlier
        ones) is cancelled by id; one that did not fire and could not be cancelled is kept
        in ``_to_cancel`` and retried in the background and by ``reconcile`` (defect 10)."""
        failed = False
        ids = [a for a in sorted(pos.algo_ids) if a not in self._fired]
        why = "protective order of a closed position"
        if len(ids) > 1:  # our own close (a reverse): both at once, one round trip, not two
            done = await asyncio.gather(*(self._cancel_algo(a, why) for a in ids))
        else:  # the sibling of a stop-loss or take-profit that fired
            done = [await self._cancel_algo(a, why) for a in ids]
        for algo_id, ok in zip(ids, done, strict=True):
            if not ok:
                self._to_cancel.add(algo_id)
                failed = True
        for order_id in pos.legacy_ids:
            try:
                await self._ex.cancel_order(self.symbol, order_id)
            except ExchangeError as exc:
                log.warning("%s: cancel of legacy order %s failed: %s", self.symbol, order_id, exc)
        if failed:
            self._spawn(self._retry_cancels())

    async def _retry_cancels(self) -> None:
        """Retry unconfirmed cancels with back-off until each is confirmed (or attempts end;
        ``reconcile`` takes over then)."""
        for attempt in range(PROTECT_ATTEMPTS):
            if not self._to_cancel:
                return
            await self._clock.sleep(PROTECT_RETRY_S * 2**attempt)
            for algo_id in sorted(self._to_cancel):
                if await self._cancel_algo(algo_id, "retry"):
                    self._to_cancel.discard(algo_id)

    async def _cancel_algo(self, algo_id: int, why: str) -> bool:
        """Cancel one algo order; True when it is confirmed gone (cancelled, or unknown)."""
        self._cancelling.add(algo_id)
        try:
            await self._ex.cancel_conditional(self.symbol, algo_id)
        except ExchangeError as exc:
            if exc.code in (UNKNOWN_ORDER, NO_SUCH_ORDER):
                return True  # already gone (fired, cancelled or expired)
            log.warning("%s: cancel of algo %s (%s) failed: %s", self.symbol, algo_id, why, exc)
            self._orders_dirty = True
            self._journal.record_event(
                self._clock.now_ms(), "cancel_failed", self.symbol, f"algo {algo_id} ({why}): {exc}"
            )
            return False
        return True
