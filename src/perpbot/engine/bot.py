"""One trading bot per symbol: the SPEC §8 state machine with every §13 correction.

The same class runs backtest, paper and live; it talks to an ``ExchangePort`` only, reads time only
from the injected ``Clock`` and never computes features (the runner hands it a ``CandleContext``).

Parts (one job per file; ``SymbolBot`` is the state machine over them)
---------------------------------------------------------------------
``bot_base.py``   shared state (``LocalPosition``, ``Execution``, ``BotState``) and helpers;
``entry.py``      risk check, filter, sizing, the entry order under the global entry lock;
``pending.py``    entries of unknown outcome (timeout, ACK) resolved by client id; new positions;
``protection.py`` SL/TP for the full quantity, re-placement, confirmed cancels, emergency close;
``ledger.py``     every execution matched to its position and counted once; trade booking;
``catchup.py``    REST catch-up of lost executions, late funding rows and late entry fees;
``exits.py``      our reduce-only closes, confirmed by the exchange; SYNC closes from REST;
``recovery.py``   start-up adoption, REST resync, reconciliation.

Life cycle
----------
``start(ctx)``     recovery (SPEC §8.2 + §13): adopt an open position (registered with the risk
                   manager, missing SL/TP re-placed), or cancel orphan normal *and* algo orders when
                   flat; the kill switch is rebuilt from the journal. The base balance is the
                   runner's job (set once before any bot starts, §13 row 15). ``start`` subscribes
                   ``on_event`` to the exchange (the runner must not subscribe it a second time).
``on_candle(ctx)`` SPEC §8.3 in order: model hot-reload; HOLD → return (the hot path, nothing else
                   happens: no REST, no journal, no allocation); daily-loss gate and kill switch
                   block *entries* only; the live position is queried; flat → risk, filter, entry;
                   opposite signal → close, wait for the close event, re-enter if allowed.
``on_event(ev)``   every execution counted once (``ledger``): entries grow their position, closes
                   reduce the position they belong to; a flat position is booked (journal, risk,
                   kill switch, every protective order cancelled by id), waking its own waiter.
``reconcile()``    every 5 min (the backtest too): a pending entry resolved; exchange flat but
                   local position → SYNC close from ``userTrades`` + income; flat symbol → this
                   bot's orphans cancelled; protection made to cover the full quantity; late
                   funding rows added to their trade.
``close_position(reason)`` a reduce-only close on demand (backtest END_OF_DATA, operators);
``stop()`` cancels background work only (protective orders stay, SPEC §13 row 28);
``state`` / ``closed_trades`` / ``estimated_pnl(price)`` are the read side for runner and monitor.

The runner must let the adapter deliver events while it awaits the bot (``SimExchange.start()``
before ``start()``; ``drain()`` after ``process_bar`` and after ``on_candle``): the bot waits for
close confirmations with ``clock.wait_for`` and never calls ``drain()`` itself.

Expected exchange behaviour (any adapter)
-----------------------------------------
Entry: ``set_leverage``, ``set_isolated_margin`` (-4046 ignored), ``market_order`` → an
``OrderResult``; if it is not FILLED, the bot waits (10 s) for the entry's fills, then queries the
order by id (``ExchangePort.get_order``); a call that fails with a transient error is
resolved by client id first. Then ``place_conditional`` STOP_MARKET and TAKE_PROFIT_MARKET,
reduce-only, each returning its algo id. Trigger: ``ALGO_UPDATE`` (TRIGGERED/FINISHED with
``triggered_order_id``) and ``ORDER_TRADE_UPDATE`` executions of the new order (any order, any
delivery: late, during the call, or never, in which case ``userTrades`` and ``get_conditional``
tell the bot). Events of one type arrive in order; the bot uses ``l``/``z`` per execution and
never depends on the terminal report.

Decisions documented here
-------------------------
* Stops are computed from the *fill* price, so SL/TP distances are exactly ``k·ATR`` from the
  real entry (the candle close is only the sizing reference). Triggers are tick-rounded to nearest.
* Both SL and TP are required: if either cannot be placed after 3 attempts the position is closed
  (SPEC §13 row 12). A non-finite or non-positive ATR skips the entry (no stop could be computed).
* A zero allocation does not trade, and neither does one that cannot pay the margin of the minimum
  order (``qty·price/L > B/N``): the min-notional bump must not borrow other symbols' shares.
* Recovery re-places missing stops from the *entry* price and the ATR of the preloaded candles
  (``start(ctx)``); without it, from the trigger prices journaled for that entry; with neither the
  position is closed (fail closed, no made-up stop). Entry time, price and fee come from the
  entry's journaled executions found by client id. A stop that would trigger at once is rejected
  by the exchange and the position is closed by the emergency path.
* A close counts as done only when the exchange confirms it (its executions sum to the position,
  or the position reads flat and is booked from ``userTrades`` + income history); an unconfirmed
  close is retried and never releases the position with PnL 0 (issue 7 §2.2, ``exits.py``).
* A stale local position found flat on a candle is closed like ``reconcile`` does (SYNC, PnL from
  REST executions and income history) rather than with PnL 0, so its result is not lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from perpbot.domain.events import AlgoUpdate, ExchangeEvent, OrderTradeUpdate
from perpbot.domain.types import (
    AlgoStatus,
    CloseReason,
    OrderStatus,
    Position,
    Side,
)
from perpbot.engine.bot_base import (
    FLAT_STATE,
    FLAT_TRIPPED,
    REMEMBER,
    BotState,
    bounded_put,
    log,
)
from perpbot.engine.catchup import CatchUpMixin
from perpbot.engine.context import CandleContext
from perpbot.engine.entry import EntryMixin
from perpbot.engine.exits import ExitMixin
from perpbot.engine.ledger import LedgerMixin, execution_of
from perpbot.engine.pending import PendingMixin
from perpbot.engine.protection import ProtectionMixin
from perpbot.engine.reconcile import ReconcileMixin
from perpbot.engine.recovery import RecoveryMixin
from perpbot.engine.unbooked import UnbookedMixin
from perpbot.exchange.errors import ExchangeError


class SymbolBot(
    EntryMixin,
    PendingMixin,
    ProtectionMixin,
    ExitMixin,
    LedgerMixin,
    CatchUpMixin,
    RecoveryMixin,
    ReconcileMixin,
    UnbookedMixin,
):
    """The per-symbol state machine; see the module docstring for the contract."""

    @property
    def state(self) -> BotState:
        p = self._pos
        if p is None:
            return FLAT_TRIPPED if self.kill_switch.tripped else FLAT_STATE
        return BotState(
            p.side,
            p.entry_price,
            p.qty,
            p.entry_time_ms,
            p.sl_id,
            p.tp_id,
            p.sl_price,
            p.tp_price,
            self.kill_switch.tripped,
        )

    @property
    def in_position(self) -> bool:
        return self._pos is not None

    @property
    def has_background(self) -> bool:
        """Re-protection, cancel retries or a late-entry adoption are still running."""
        return bool(self._bg)

    def estimated_pnl(self, price: float) -> float | None:
        """Unrealised PnL at ``price`` (SPEC §8.5/§8.7: ``±(price − entry)·qty``); None when flat
        or when the price is unusable, so the position monitor idles."""
        p = self._pos
        if p is None or not (price > 0) or p.entry_price <= 0 or p.qty <= 0:
            return None
        return p.side.sign * (price - p.entry_price) * p.qty

    async def on_candle(
        self,
        ctx: CandleContext,
        position: Awaitable[Position | None] | None = None,
        read_since: BotState | None = None,
    ) -> None:
        """One closed candle. HOLD costs a reload check and one comparison (the backtest hot path).

        ``position``: the live runtime's read of this symbol's position, started when the candle
        came in (so that it overlaps the feature computation); awaited where the bot would read it
        (SPEC §8.3 step 7). None: the bot reads it itself. ``read_since``: the bot's ``state``
        when that read started; a change since then may make its answer stale (see
        ``_on_signal``)."""
        try:
            self._filter.maybe_reload()
            if ctx.signal is None:
                return
            with self._clock.scope():  # this bot's waiting stays its own (defect 18)
                if position is not None and self._op_lock.locked():
                    # A reconciliation pass (or a close) is under way and finishes first: the
                    # read handed over may predate what it does (adopt, emergency-close), so
                    # the bot reads again. The caller discards a future; a coroutine is closed.
                    if asyncio.iscoroutine(position):
                        position.close()
                    position = None
                async with self._op_lock:
                    await self._on_signal(ctx, ctx.signal, position, read_since)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            log.exception("%s: error while handling the candle at %d", self.symbol, ctx.open_time_ms)

    async def _on_signal(
        self,
        ctx: CandleContext,
        side: Side,
        position: Awaitable[Position | None] | None = None,
        read_since: BotState | None = None,
    ) -> None:
        log.info("SIGNAL %s %s close=%.6f atr=%.6f", self.symbol, side.value, ctx.close, ctx.atr)
        seen = self._pos
        if self._busy:
            log.warning("%s: previous entry/reverse still in flight; signal ignored", self.symbol)
            return
        entries_ok = await self._risk.trading_allowed()
        if not entries_ok:
            log.warning("%s: daily loss limit reached: entries blocked (exits still run)", self.symbol)
        if self.kill_switch.tripped:
            log.info("%s: kill switch active (%s): entries blocked", self.symbol, self.kill_switch.reason)
        pos_ex = await (position if position is not None else self._ex.position(self.symbol))
        moved = self._pos is not seen or (read_since is not None and self.state != read_since)
        if moved and (pos_ex is not None or self._pos is not None):
            # A close or a fill was handled while the read was out: its answer may predate it (a
            # stale "open" re-adopted the position just booked as closed). Read again. Not when
            # both say flat: a flat answer can only be stale about a position opened since,
            # and none is (an exit booked while the read was out is the common case: the entry
            # of the same candle then saves a round trip).
            pos_ex = await self._ex.position(self.symbol)
        if pos_ex is None:
            if self._pos is not None:
                await self._sync_close("flat on candle")
            elif self._pending is not None:
                # An entry of unknown outcome is not a stale registration: it may still fill.
                # Resolved first; while it stays open no second entry is sent.
                await self._resolve_pending()
                if self._pending is not None or self._pos is not None:
                    log.warning("%s: an earlier entry is still unresolved; no new entry", self.symbol)
                    return
            elif self._risk.is_open(self.symbol):
                await self._release_stale("flat on candle")
            if entries_ok and not self.kill_switch.tripped:
                await self._try_enter(ctx, side)
            return
        await self._resync(pos_ex, ctx)
        if pos_ex.side is side:
            return  # same side: keep (no trailing, no time exit)
        await self._reverse(ctx, pos_ex, side)

    async def _reverse(self, ctx: CandleContext, pos_ex: Position, new_side: Side) -> None:
        """SPEC §8.6 corrected: close (reduce-only), wait for the close event, clean up, then
        the kill switch, the daily-loss gate, the risk manager and the filter decide a re-entry."""
        pos = self._pos
        if pos is None:
            return
        self._busy = True
        try:
            log.info("REVERSE %s %s -> %s", self.symbol, pos.side.value, new_side.value)
            if not await self._close_market(pos, CloseReason.REVERSE):
                # Not confirmed: the (rest of the) position keeps its protection; no re-entry.
                log.warning("%s: reverse close unconfirmed; no re-entry", self.symbol)
                return
            await self._cancel_leftovers()
        finally:
            self._busy = False
        if self.kill_switch.tripped:
            log.info("%s: kill switch active after the close: no re-entry", self.symbol)
            return
        if not await self._risk.trading_allowed():
            log.warning("%s: daily loss limit: reverse closed, no re-entry", self.symbol)
            return
        await self._try_enter(ctx, new_side)

    async def close_position(self, reason: CloseReason = CloseReason.MANUAL) -> bool:
        """Close the open position now (reduce-only MARKET) and wait for the confirmation.

        For the backtest's END_OF_DATA and for operators. Returns True when the close
        was confirmed and booked; False when flat or when the position is still (partly) open.
        """
        with self._clock.scope():
            try:
                async with self._op_lock:
                    return await self._close_now(reason)
            except ExchangeError as exc:  # the position (if any) keeps its protection
                self.errors += 1
                log.error("%s: %s close failed: %s; position left protected", self.symbol, reason.value, exc)
                return False

    async def _close_now(self, reason: CloseReason) -> bool:
        pos_ex = await self._ex.position(self.symbol)
        if pos_ex is None:
            if self._pos is not None:
                await self._sync_close(f"{reason.value} requested while flat")
            return False
        pos = await self._resync(pos_ex, None)
        self._busy = True
        try:
            if not await self._close_market(pos, reason):
                return False
            await self._cancel_leftovers()
            return True
        finally:
            self._busy = False

    async def on_event(self, ev: ExchangeEvent) -> None:
        """User-stream handler: only this symbol's order and algo updates matter."""
        try:
            if isinstance(ev, OrderTradeUpdate):
                if ev.symbol == self.symbol:
                    await self._on_order_update(ev)
            elif isinstance(ev, AlgoUpdate) and ev.symbol == self.symbol:
                self._on_algo_update(ev)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            log.exception("%s: error while handling %s", self.symbol, type(ev).__name__)

    async def _on_order_update(self, ev: OrderTradeUpdate) -> None:
        """Each execution is journaled, then counted once: an entry's grows its position, any
        other reduces the position it belongs to (``ledger``)."""
        fill = ev.last_filled_qty > 0 and ev.execution_type in ("TRADE", "CALCULATED")
        if fill:
            self._journal.record_fill(ev)  # persisted before it is acted upon
            if ev.last_filled_price <= 0:  # no usable price: reconciliation books it from REST
                log.warning(
                    "%s: execution %s without a price; left to reconciliation", self.symbol, ev.trade_id
                )
                fill = False
        terminal = ev.status in _TERMINAL
        p = self._pending
        if ev.order_id in self._entry_acc or (
            p is not None and (ev.client_order_id == p.client_id or ev.order_id == p.order_id)
        ):
            if fill and self._entry_execution(execution_of(ev)) and self._pos is not None:
                self._spawn(self._ensure_protection_bg(self._pos))
            acc = self._entry_acc.get(ev.order_id)
            if terminal:
                if acc is not None:
                    acc.final = True
                waiter = self._entry_waiters.get(ev.order_id)
                if waiter is not None:
                    waiter.set()
                pos = self._pos
                if p is not None and pos is not None and pos.entry_order_id == ev.order_id:
                    self._pending = None
            if fill and p is not None and self._pos is None and not self._busy:
                self._spawn(self._late_entry())
            return
        if fill:
            await self._close_execution(execution_of(ev))
        elif terminal and ev.status is not OrderStatus.FILLED:
            pos = self._pos
            if pos is not None and ev.order_id in pos.close_orders:
                # A closing order ended short (EXPIRED / CANCELED): what is left stays protected.
                self._spawn(self._ensure_protection_bg(pos))

    def _on_algo_update(self, ev: AlgoUpdate) -> None:
        pos = self._pos
        if ev.status in (AlgoStatus.TRIGGERED, AlgoStatus.FINISHED, AlgoStatus.TRIGGERING):
            bounded_put(self._fired, ev.algo_id, None, REMEMBER)
            if ev.triggered_order_id:
                # The triggered order is identified by id (defect 10), and so is its position.
                bounded_put(self._triggered, ev.triggered_order_id, ev.algo_id, REMEMBER)
                owner = self._algo_owner.get(ev.algo_id)
                if owner is not None:
                    owner.close_orders.add(ev.triggered_order_id)
            return
        if ev.status in (AlgoStatus.CANCELED, AlgoStatus.EXPIRED, AlgoStatus.REJECTED):
            if ev.algo_id in self._cancelling:
                self._cancelling.discard(ev.algo_id)
                return
            if pos is None or ev.algo_id not in (pos.sl_id, pos.tp_id):
                return
            kind = "SL" if ev.algo_id == pos.sl_id else "TP"
            if kind == "SL":
                pos.sl_id = 0
            else:
                pos.tp_id = 0
            msg = f"{kind} {ev.algo_id} ended {ev.status.value} while the position is open; re-placing"
            log.error("%s: %s", self.symbol, msg)
            self._journal.record_event(self._clock.now_ms(), "protection_lost", self.symbol, msg)
            self._spawn(self._reprotect(pos))


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED})
