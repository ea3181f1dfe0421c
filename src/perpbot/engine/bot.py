"""One trading bot per symbol: the SPEC §8 state machine with every §13 correction.

The same class runs backtest, paper and live; it talks to an ``ExchangePort`` only, reads time only
from the injected ``Clock`` and never computes features (the runner hands it a ``CandleContext``).

Parts (one job per file; ``SymbolBot`` is the state machine over them)
---------------------------------------------------------------------
``bot_base.py``   shared state (``LocalPosition``, ``BotState``) and the journal/clock helpers;
``entry.py``      risk check, filter, sizing, the entry order under the global entry lock;
``protection.py`` SL/TP placement and re-placement, orphan/sibling cancels, emergency close;
``exits.py``      our market closes, close fills matched to the position, trade booking;
``recovery.py``   start-up adoption, REST resync, reconciliation and SYNC closes.

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
``on_event(ev)``   close detection (``CloseTracker``), net PnL, journal, risk, kill switch, sibling
                   cancel by id, notification; wakes a waiting reverse.
``reconcile()``    every 5 min in live: exchange flat but local position → SYNC close from income
                   history; position without protection → protective orders re-placed.
``close_position(reason)`` a reduce-only close on demand (backtest END_OF_DATA, operators);
``stop()`` cancels background work only (protective orders stay, SPEC §13 row 28);
``state`` / ``closed_trades`` / ``estimated_pnl(price)`` are the read side for runner and monitor.

The runner must let the adapter deliver events while it awaits the bot (``SimExchange.start()``
before ``start()``; ``drain()`` after ``process_bar`` and after ``on_candle``): the bot waits for
close confirmations with ``clock.wait_for`` and never calls ``drain()`` itself.

Expected exchange behaviour (any adapter)
-----------------------------------------
Entry: ``set_leverage``, ``set_isolated_margin`` (-4046 ignored), ``market_order`` → an
``OrderResult``; if it is not FILLED with an average price, the bot waits (10 s) for the entry's
``ORDER_TRADE_UPDATE`` fills and then falls back to the position's entry price. Then
``place_conditional`` STOP_MARKET and TAKE_PROFIT_MARKET, reduce-only, each returning its algo id.
Trigger: ``ALGO_UPDATE`` (TRIGGERED/FINISHED, ideally with ``triggered_order_id``) then
``ORDER_TRADE_UPDATE`` fills of the new MARKET order, reduce-only or of original type SL/TP; the
sibling stays open until the bot cancels it. Reverse: a reduce-only MARKET close whose fills
arrive as ``ORDER_TRADE_UPDATE``; the bot waits up to 10 s (``clock.wait_for``) for them.

Decisions documented here
-------------------------
* Stops are computed from the *fill* price, so SL/TP distances are exactly ``k·ATR`` from the
  real entry (the candle close is only the sizing reference). Triggers are tick-rounded to nearest.
* Both SL and TP are required: if either cannot be placed after 3 attempts the position is closed
  (SPEC §13 row 12). A non-finite or non-positive ATR skips the entry (no stop could be computed).
* A zero allocation does not trade, and neither does one that cannot pay the margin of the minimum
  order (``qty·price/L > B/N``): the min-notional bump must not borrow other symbols' shares.
* Recovery re-places missing stops from the *entry* price and the current ATR (ctx); without a
  usable ATR it uses the trigger price last journaled for that entry, else ±1 % of the entry
  (``FALLBACK_STOP_FRACTION``). A stop that would trigger at once is rejected by the exchange and
  the position is closed by the emergency path, which is the outcome the stop would have had.
* A close that is not confirmed within 10 s is released in the risk manager with PnL 0 and kept as
  "late": when its fills do arrive, the trade is journaled with its real PnL and the PnL is added
  with ``RiskManager.record_pnl`` (never removing a newer registration of the symbol).
* A stale local position found flat on a candle is closed like ``reconcile`` does (SYNC, PnL from
  income history) rather than with PnL 0, so its result is not lost.
"""

from __future__ import annotations

import asyncio

from perpbot.domain.events import AlgoUpdate, ExchangeEvent, OrderTradeUpdate
from perpbot.domain.types import (
    AlgoStatus,
    CloseReason,
    OrderType,
    Position,
    Side,
)
from perpbot.engine.bot_base import (
    FLAT_STATE,
    FLAT_TRIPPED,
    REMEMBER,
    BotState,
    log,
)
from perpbot.engine.close_tracker import EntryFill, bounded_put
from perpbot.engine.context import CandleContext
from perpbot.engine.entry import EntryMixin
from perpbot.engine.exits import ExitMixin
from perpbot.engine.protection import ProtectionMixin
from perpbot.engine.recovery import RecoveryMixin


class SymbolBot(EntryMixin, ProtectionMixin, ExitMixin, RecoveryMixin):
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

    def estimated_pnl(self, price: float) -> float | None:
        """Unrealised PnL at ``price`` (SPEC §8.5/§8.7: ``±(price − entry)·qty``); None when flat
        or when the price is unusable, so the position monitor idles."""
        p = self._pos
        if p is None or not (price > 0) or p.entry_price <= 0 or p.qty <= 0:
            return None
        return p.side.sign * (price - p.entry_price) * p.qty

    async def on_candle(self, ctx: CandleContext) -> None:
        """One closed candle. HOLD costs a reload check and one comparison (the backtest hot path)."""
        try:
            self._filter.maybe_reload()
            if ctx.signal is None:
                return
            with self._clock.scope():  # this bot's waiting stays its own (defect 18)
                await self._on_signal(ctx, ctx.signal)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.errors += 1
            log.exception("%s: error while handling the candle at %d", self.symbol, ctx.open_time_ms)

    async def _on_signal(self, ctx: CandleContext, side: Side) -> None:
        log.info("SIGNAL %s %s close=%.6f atr=%.6f", self.symbol, side.value, ctx.close, ctx.atr)
        if self._busy:
            log.warning("%s: previous entry/reverse still in flight; signal ignored", self.symbol)
            return
        entries_ok = await self._risk.trading_allowed()
        if not entries_ok:
            log.warning("%s: daily loss limit reached: entries blocked (exits still run)", self.symbol)
        if self.kill_switch.tripped:
            log.info("%s: kill switch active (%s): entries blocked", self.symbol, self.kill_switch.reason)
        pos_ex = await self._ex.position(self.symbol)
        if pos_ex is None:
            if self._pos is not None:
                await self._sync_close("flat on candle")
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
            pos.qty = pos_ex.quantity
            log.info("REVERSE %s %s -> %s", self.symbol, pos.side.value, new_side.value)
            outcome = await self._close_market(pos, CloseReason.REVERSE)
            if outcome is None:
                return  # close refused: keep the position and its protection
            await self._cancel_leftovers()
            if outcome is False and await self._ex.position(self.symbol) is not None:
                log.warning("%s: reverse close unconfirmed and a position remains; no re-entry", self.symbol)
                return
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

        For the backtest's END_OF_DATA and for operators. Returns True when a close was recorded
        or released; False when flat or when the exchange refused the order.
        """
        with self._clock.scope():
            return await self._close_now(reason)

    async def _close_now(self, reason: CloseReason) -> bool:
        pos_ex = await self._ex.position(self.symbol)
        if pos_ex is None:
            if self._pos is not None:
                await self._sync_close(f"{reason.value} requested while flat")
            return False
        pos = await self._resync(pos_ex, None)
        self._busy = True
        try:
            outcome = await self._close_market(pos, reason)
            if outcome is None:
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
        if ev.last_filled_qty > 0 and (ev.execution_type == "TRADE" or ev.execution_type == "CALCULATED"):
            self._journal.record_fill(ev)  # persisted before it is acted upon
        result = self._tracker.on_update(ev)
        if result is None:
            return
        if isinstance(result, EntryFill):
            waiter = self._entry_waiters.get(result.order_id)
            if waiter is not None:
                waiter.set()
            return
        await self._on_close_fill(result)

    def _on_algo_update(self, ev: AlgoUpdate) -> None:
        pos = self._pos
        if ev.status in (AlgoStatus.TRIGGERED, AlgoStatus.FINISHED, AlgoStatus.TRIGGERING):
            if ev.triggered_order_id:
                if pos is not None and ev.algo_id == pos.sl_id:
                    reason = CloseReason.SL
                elif pos is not None and ev.algo_id == pos.tp_id:
                    reason = CloseReason.TP
                else:
                    reason = CloseReason.SL if ev.order_type is OrderType.STOP_MARKET else CloseReason.TP
                bounded_put(self._triggered, ev.triggered_order_id, reason, REMEMBER)
                self._tracker.expect_close(ev.triggered_order_id)
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
