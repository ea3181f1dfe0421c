"""Periodic reconciliation (SPEC §13 rows 5, 6; issue 7 §2.4–2.6): the REST check that makes
the local position agree with the exchange's between events.

Why a module of its own: start-up recovery (``recovery``) adopts once; this runs every few
minutes for the life of the process, and the backtest's skip-ahead depends on what it reads
(``at_rest``).
"""

from __future__ import annotations

import asyncio

from perpbot.domain.types import Position
from perpbot.engine.bot_base import PROTECT_RETRY_S, BotBase, LocalPosition, is_transient, log
from perpbot.engine.context import CandleContext
from perpbot.exchange.errors import ExchangeError

RECONCILE_ATTEMPTS = 3


class ReconcileMixin(BotBase):
    """Periodic REST reconciliation (see the module docstring)."""

    async def _resync(self, pos_ex: Position, ctx: CandleContext | None) -> LocalPosition:
        """Make the local position agree with the exchange's (adopt, or fix the quantity: the
        executions the stream missed are fetched from REST first, so they are booked)."""
        pos = self._pos
        if pos is None or pos.side is not pos_ex.side:
            if pos is not None:
                log.error("%s: local %s but exchange %s; re-adopting", self.symbol, pos.side, pos_ex.side)
                self._pos = None
            return await self._adopt(pos_ex, ctx, announce=True)
        tol = self._tol()
        if abs(pos.qty - pos_ex.quantity) > tol:
            async with self._close_lock:
                await self._catch_up_from_rest(pos)
            if abs(pos.qty - pos_ex.quantity) > tol:
                log.warning(
                    "%s: local qty %s, exchange qty %s; using the exchange's",
                    self.symbol,
                    pos.qty,
                    pos_ex.quantity,
                )
                if pos_ex.quantity > pos.qty:
                    pos.entry_qty += pos_ex.quantity - pos.qty
                pos.qty = pos_ex.quantity
        return pos

    @property
    def at_rest(self) -> bool:
        """Flat with nothing in flight: no position, no entry of unknown outcome, no trade
        awaiting late funding rows or entry fees, no own order left to check or cancel, no
        background task, not busy. ``reconcile()`` is then a no-op while the exchange shows the
        symbol flat (it reads the position and returns), as a HOLD candle always is. The backtest
        skips such bots' steps on that ground (``backtest.agenda``); keep this in step with
        ``_reconcile_once``."""
        return not self._funding_watch and self._settled

    @property
    def busy(self) -> bool:
        """An entry, reverse or close is in flight: ``reconcile()`` returns at once."""
        return self._busy

    @property
    def watching_funding_only(self) -> bool:
        """At rest but for booked trades still watched for late funding rows. ``reconcile()`` then
        only re-reads the income history (``_late_funding``) and drops expired watches: a no-op
        while the symbol gained no income row since the last pass read it, and dropping a watch
        later changes nothing (each pass first drops what expired by its own time, and the bot
        is awake, so reconciled, from its next entry on). The backtest lets such a bot sleep on
        that ground (``backtest.loop``)."""
        return bool(self._funding_watch) and self._settled

    @property
    def _settled(self) -> bool:
        """``at_rest`` but for the funding watch."""
        return (
            self._pos is None
            and self._pending is None
            and not self._fee_watch
            and not self._orders_dirty
            and not self._to_cancel
            and not self._bg
            and not self._busy
        )

    async def reconcile(self) -> None:
        """Periodic REST check (SPEC §13 rows 5, 6; issue 7 §2.4–2.6): resolve an entry of
        unknown outcome, SYNC-close a position the exchange shows flat, cancel this bot's orphans
        on a flat symbol, adopt an unknown position, and make protection cover the full quantity."""
        if self._busy or self._op_lock.locked():  # a candle or a close decides meanwhile
            return
        with self._clock.scope():
            async with self._op_lock:
                await self._reconcile()

    async def _reconcile(self) -> None:
        """One pass, repeated (idempotent) with back-off when a REST call fails transiently, so
        that a flaky read does not postpone the repair by a whole period."""
        for attempt in range(RECONCILE_ATTEMPTS):
            try:
                await self._reconcile_once()
                return
            except asyncio.CancelledError:
                raise
            except ExchangeError as exc:
                if not is_transient(exc) or attempt == RECONCILE_ATTEMPTS - 1:
                    self.errors += 1
                    log.error("%s: reconciliation failed: %s", self.symbol, exc)
                    return
                await self._clock.sleep(PROTECT_RETRY_S * 2**attempt)
            except Exception:
                self.errors += 1
                log.exception("%s: reconciliation failed", self.symbol)
                return

    async def _reconcile_once(self) -> None:
        if self._pending is not None:
            await self._resolve_pending()
        if self._funding_watch:
            await self._late_funding()
        if self._fee_watch:
            await self._late_entry_fees()
        # The pass runs beside the candle jobs and the user stream: a read answered before an
        # entry filled (or a close was booked) but acted upon after is stale. Acting on it
        # SYNC-closed a live position (phantom trade, its new SL/TP cancelled as orphans) or
        # re-adopted a closed one. The state moved while the read was out: next pass.
        seen = (self._pos, self._pending)
        pos_ex = await self._ex.position(self.symbol)
        if self._busy or self._pos is not seen[0] or self._pending is not seen[1]:
            log.info("%s: reconcile pass skipped: the position changed during its read", self.symbol)
            return
        if pos_ex is None:
            if self._pos is not None:
                await self._sync_close("reconcile")
            elif self._pending is None and (self._orders_dirty or self._to_cancel):
                await self._cancel_orphans("reconcile: flat symbol")
                self._to_cancel.clear()
            return
        pos = await self._resync(pos_ex, None)
        if self._busy or self._pos is not pos:
            return
        for algo_id in sorted(self._to_cancel):
            if algo_id not in (pos.sl_id, pos.tp_id) and await self._cancel_algo(algo_id, "reconcile"):
                self._to_cancel.discard(algo_id)
        await self._ensure_protection(pos)
