"""Protection: reduce-only SL/TP placement with retries, re-placement, orphan and sibling cancels.

Why here: "never a position without its stop" is one rule; placing, re-placing and cleaning
up protective orders are its parts, and the emergency close is its last resort.
"""

from __future__ import annotations

from perpbot.domain.types import (
    CloseReason,
    ConditionalOrder,
    OrderType,
)
from perpbot.engine.bot_base import (
    PROTECT_ATTEMPTS,
    PROTECT_RETRY_S,
    BotBase,
    LocalPosition,
    log,
)
from perpbot.engine.notifier import (
    alert_message,
    emergency_message,
)
from perpbot.exchange.errors import ExchangeError, ExchangeUnavailable


class ProtectionMixin(BotBase):
    """Protection: reduce-only SL/TP placement with retries, re-placement, orphan and sibling cancels."""

    async def _protect(self, pos: LocalPosition, *, want_sl: bool, want_tp: bool) -> bool:
        """Place SL and TP independently, 3 attempts each; emergency close if either fails."""
        failed: list[str] = []
        for kind, wanted in (("SL", want_sl), ("TP", want_tp)):
            if not wanted or self._pos is not pos:
                continue
            if not await self._place_protective(pos, kind):
                failed.append(kind)
        if self._pos is not pos:
            # Closed while we were placing (e.g. the stop fired at once): nothing may stay behind.
            for algo_id in (pos.sl_id, pos.tp_id):
                if algo_id:
                    await self._cancel_algo(algo_id, "position closed during placement")
            return True
        if failed:
            await self._emergency_close(pos, failed)
            return False
        return True

    async def _place_protective(self, pos: LocalPosition, kind: str) -> bool:
        otype = OrderType.STOP_MARKET if kind == "SL" else OrderType.TAKE_PROFIT_MARKET
        trigger = pos.sl_price if kind == "SL" else pos.tp_price
        exit_side = pos.side.exit_order_side
        for attempt in range(1, PROTECT_ATTEMPTS + 1):
            cid = self._cid(kind)
            row = self._journal.record_order_request(
                time_ms=self._clock.now_ms(),
                symbol=self.symbol,
                kind=kind,
                order_type=otype.value,
                side=exit_side.value,
                qty=pos.qty,
                client_id=cid,
                trigger_price=trigger,
                reason=f"attempt {attempt}",
            )
            order: ConditionalOrder | None = None
            try:
                order = await self._ex.place_conditional(
                    self.symbol, otype, exit_side, pos.qty, trigger, reduce_only=True, client_algo_id=cid
                )
            except Exception as exc:  # any failure counts as a failed attempt: never naked
                self._journal_error(row, exc)
                log.warning("%s: %s placement attempt %d failed: %s", self.symbol, kind, attempt, exc)
                if not isinstance(exc, ExchangeError) or isinstance(exc, ExchangeUnavailable):
                    order = await self._find_algo_by_cid(cid)  # it may exist anyway: look it up
            if order is not None:
                self._journal.record_order_result(
                    row, time_ms=self._clock.now_ms(), status=order.status.value, algo_id=order.algo_id
                )
                if kind == "SL":
                    pos.sl_id = order.algo_id
                else:
                    pos.tp_id = order.algo_id
                return True
            if attempt < PROTECT_ATTEMPTS:
                await self._clock.sleep(PROTECT_RETRY_S)
        return False

    async def _find_algo_by_cid(self, cid: str) -> ConditionalOrder | None:
        try:
            for o in await self._ex.open_conditional_orders(self.symbol):
                if o.client_algo_id == cid:
                    return o
        except Exception:
            return None
        return None

    async def _emergency_close(self, pos: LocalPosition, failed: list[str]) -> None:
        """SPEC §13 row 12: the position cannot be protected → reduce-only market close + alert."""
        detail = f"{' and '.join(failed)} could not be placed after {PROTECT_ATTEMPTS} attempts"
        log.error("%s: %s; emergency close", self.symbol, detail)
        self._journal.record_event(self._clock.now_ms(), "emergency_close", self.symbol, detail)
        outcome = await self._close_market(pos, CloseReason.EMERGENCY)
        if outcome is None:
            text = (
                f"{detail}; the emergency close FAILED: the position is open without its "
                f"{' and '.join(failed)}."
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
        if self._pos is pos and not self._busy:
            await self._notifier.notify(
                "alert", alert_message(self.symbol, "a protective order disappeared; re-placing it")
            )
            await self._protect(pos, want_sl=not pos.sl_id, want_tp=not pos.tp_id)

    async def _cancel_orphans(self, why: str) -> None:
        """Flat: every open normal and algo order of the symbol is an orphan (SPEC §13 row 1)."""
        normal = await self._ex.open_orders(self.symbol)
        algo = await self._ex.open_conditional_orders(self.symbol)
        if not normal and not algo:
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

    async def _cancel_leftovers(self) -> None:
        """After a close of ours: anything still open for the flat symbol is an orphan."""
        try:
            await self._cancel_orphans("after close")
        except ExchangeError as exc:
            log.warning("%s: leftover cancel failed: %s", self.symbol, exc)

    async def _cancel_algo(self, algo_id: int, why: str) -> None:
        self._cancelling.add(algo_id)
        try:
            await self._ex.cancel_conditional(self.symbol, algo_id)
        except ExchangeError as exc:  # -2011 unknown order: already gone, fine
            log.debug("%s: cancel of algo %s (%s) failed: %s", self.symbol, algo_id, why, exc)
