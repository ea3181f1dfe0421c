"""One trading bot per symbol: the SPEC §8 state machine with every §13 correction.

The same class runs backtest, paper and live; it talks to an ``ExchangePort`` only, reads time only
from the injected ``Clock`` and never computes features (the runner hands it a ``CandleContext``).

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
import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from perpbot.config import AppConfig
from perpbot.domain.events import AlgoUpdate, ExchangeEvent, OrderTradeUpdate
from perpbot.domain.types import (
    AlgoStatus,
    ClosedTrade,
    CloseReason,
    ConditionalOrder,
    OrderResult,
    OrderStatus,
    OrderType,
    Position,
    Side,
    SymbolFilters,
)
from perpbot.engine.clock import Clock
from perpbot.engine.close_tracker import CloseFill, CloseTracker, EntryFill, bounded_put
from perpbot.engine.context import CandleContext
from perpbot.engine.journal import Journal
from perpbot.engine.kill_switch import KillSwitch
from perpbot.engine.notifier import (
    Notifier,
    alert_message,
    close_message,
    emergency_message,
    entry_message,
    kill_switch_message,
    recovered_message,
)
from perpbot.engine.risk import RiskManager
from perpbot.engine.sizing import position_size
from perpbot.exchange.errors import NO_NEED_TO_CHANGE_MARGIN_TYPE, ExchangeError, ExchangeUnavailable
from perpbot.exchange.filters import round_price
from perpbot.exchange.port import ExchangePort
from perpbot.ml.decision import EntryFilter
from perpbot.strategy.signal import atr_stops

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 10.0  # SPEC §8.6: wait for the reverse close event, then release
ENTRY_FILL_WAIT_S = 10.0
PROTECT_ATTEMPTS = 3  # SPEC §13 row 12
PROTECT_RETRY_S = 1.0
FALLBACK_STOP_FRACTION = 0.01  # recovery without ATR and without a journaled trigger price
FILTERS_TTL_MS = 24 * 3_600_000  # SPEC §13 row 18: exchange info cached 24 h
_HOUR_MS = 3_600_000
_REMEMBER = 256  # bounded id maps (own orders, triggered ids, accounted executions)


@dataclass(slots=True)
class _Position:
    """The bot's local view of its open position (one-way mode: at most one)."""

    side: Side
    qty: float  # quantity still open
    entry_price: float
    entry_time_ms: int
    entry_order_id: int = 0  # 0 when adopted without a journaled entry
    entry_fee: float | None = None  # known at adoption from the journal; else from the tracker
    sl_price: float = 0.0
    tp_price: float = 0.0
    sl_id: int = 0  # algo ids (0 = none placed)
    tp_id: int = 0
    legacy_ids: tuple[int, ...] = ()  # conditional orders found on the normal book at recovery
    closed_qty: float = 0.0  # partial closes accumulate until the position is flat
    closed_notional: float = 0.0
    closed_rp: float = 0.0
    closed_fee: float = 0.0
    adopted: bool = False


@dataclass(frozen=True, slots=True)
class BotState:
    """Read-only snapshot for the runner, the monitor and tests."""

    side: Side | None
    entry_price: float
    qty: float
    entry_time_ms: int
    sl_id: int
    tp_id: int
    sl_price: float
    tp_price: float
    kill_switch: bool


_FLAT_STATE = BotState(None, 0.0, 0.0, 0, 0, 0, 0.0, 0.0, False)
_FLAT_TRIPPED = BotState(None, 0.0, 0.0, 0, 0, 0, 0.0, 0.0, True)


class SymbolBot:
    """The per-symbol state machine; see the module docstring for the contract."""

    def __init__(
        self,
        symbol: str,
        config: AppConfig,
        exchange: ExchangePort,
        risk: RiskManager,
        entry_filter: EntryFilter,
        journal: Journal,
        clock: Clock,
        notifier: Notifier,
        *,
        kill_switch: KillSwitch | None = None,
        num_symbols: int | None = None,
    ) -> None:
        self.symbol = symbol
        self._cfg = config
        self._ex = exchange
        self._risk = risk
        self._filter = entry_filter
        self._journal = journal
        self._clock = clock
        self._notifier = notifier
        self.kill_switch = kill_switch if kill_switch is not None else KillSwitch(symbol, journal)
        self._params = config.params_for(symbol)
        self._leverage = config.leverage
        self._n = num_symbols if num_symbols else max(1, len(config.symbols))
        self._tracker = CloseTracker(symbol)
        self._close_lock = asyncio.Lock()
        self._pos: _Position | None = None
        self._filters: SymbolFilters | None = None
        self._filters_at = 0
        self._busy = False  # an entry or reverse is in flight (reconcile stays out)
        self._closed_evt: asyncio.Event | None = None
        self._entry_waiters: dict[int, asyncio.Event] = {}
        self._own_cids: OrderedDict[str, CloseReason] = OrderedDict()  # our market closes
        self._own_orders: OrderedDict[int, CloseReason] = OrderedDict()
        self._triggered: OrderedDict[int, CloseReason] = OrderedDict()  # from ALGO_UPDATE
        self._late: OrderedDict[int, _Position] = OrderedDict()  # released on timeout, by order id
        self._accounted: OrderedDict[str, None] = OrderedDict()  # execution ids already in a trade
        self._cancelling: set[int] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self._subscribed = False
        self._seq = 0
        self.closed_trades: list[ClosedTrade] = []
        self.errors = 0  # per-candle / per-event exceptions caught and logged

    # ================================================================ views
    @property
    def state(self) -> BotState:
        p = self._pos
        if p is None:
            return _FLAT_TRIPPED if self.kill_switch.tripped else _FLAT_STATE
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

    # ================================================================ start-up
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
        await self._symbol_filters()
        now = self._clock.now_ms()
        reason = self.kill_switch.boot(now, reset=self.symbol in self._cfg.reset_kill_switch)
        if reason:
            log.warning("%s: kill switch is active at start: %s", self.symbol, reason)
            await self._notifier.notify("kill_switch", kill_switch_message(self.symbol, reason))
        pos_ex = await self._ex.position(self.symbol)
        if pos_ex is None:
            await self._cancel_orphans("flat start")
            if self._risk.is_open(self.symbol):
                await self._release_stale("flat start")
            return
        await self._adopt(pos_ex, ctx, announce=True)

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

    async def _release_stale(self, why: str) -> None:
        """The risk registry lists this symbol but nothing is open: release with PnL 0."""
        await self._risk.close(self.symbol, 0.0)
        self._journal.record_event(
            self._clock.now_ms(), "risk_release", self.symbol, f"{why}: stale registration released (PnL 0)"
        )

    async def _adopt(self, pos_ex: Position, ctx: CandleContext | None, *, announce: bool) -> _Position:
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
        pos = _Position(
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

    async def _restore_protection(self, pos: _Position, ctx: CandleContext | None) -> list[str]:
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

    def _journaled_triggers(self, pos: _Position) -> tuple[float, float]:
        sl = tp = 0.0
        for o in self._journal.orders(self.symbol):
            if o.time_ms >= pos.entry_time_ms and o.trigger_price:
                if o.kind == "SL":
                    sl = o.trigger_price
                elif o.kind == "TP":
                    tp = o.trigger_price
        return sl, tp

    # ================================================================ candles
    async def on_candle(self, ctx: CandleContext) -> None:
        """One closed candle. HOLD costs a reload check and one comparison (the backtest hot path)."""
        try:
            self._filter.maybe_reload()
            if ctx.signal is None:
                return
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

    async def _resync(self, pos_ex: Position, ctx: CandleContext | None) -> _Position:
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

    # ================================================================ entry
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
                decision = await self._risk.can_open(self.symbol, side)  # another bot may have won
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
                pos = _Position(
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

    # ================================================================ protection
    async def _protect(self, pos: _Position, *, want_sl: bool, want_tp: bool) -> bool:
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

    async def _place_protective(self, pos: _Position, kind: str) -> bool:
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

    async def _emergency_close(self, pos: _Position, failed: list[str]) -> None:
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

    # ================================================================ closing ourselves
    async def _close_market(self, pos: _Position, reason: CloseReason) -> bool | None:
        """Reduce-only MARKET close, then wait for its fills (10 s).

        True = confirmed by the event; False = timed out, released with PnL 0 and parked as
        "late"; None = the order was not accepted (position unchanged).
        """
        evt = asyncio.Event()
        self._closed_evt = evt
        cid = self._cid("X" if reason is CloseReason.EMERGENCY else "R")
        bounded_put(self._own_cids, cid, reason, _REMEMBER)
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
        bounded_put(self._own_orders, res.order_id, reason, _REMEMBER)
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
            bounded_put(self._late, res.order_id, pos, _REMEMBER)
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

    async def close_position(self, reason: CloseReason = CloseReason.MANUAL) -> bool:
        """Close the open position now (reduce-only MARKET) and wait for the confirmation.

        For the backtest's END_OF_DATA and for operators. Returns True when a close was recorded
        or released; False when flat or when the exchange refused the order.
        """
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

    async def stop(self) -> None:
        """Shutdown (SPEC §13 row 28): cancel background work only. Protective orders stay on the
        exchange on purpose; the next start-up verifies them."""
        for task in list(self._bg):
            task.cancel()
        await asyncio.gather(*list(self._bg), return_exceptions=True)

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

    # ================================================================ events
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
                bounded_put(self._triggered, ev.triggered_order_id, reason, _REMEMBER)
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

    async def _reprotect(self, pos: _Position) -> None:
        if self._pos is pos and not self._busy:
            await self._notifier.notify(
                "alert", alert_message(self.symbol, "a protective order disappeared; re-placing it")
            )
            await self._protect(pos, want_sl=not pos.sl_id, want_tp=not pos.tp_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def wait_background(self) -> None:
        """Let background work (protection re-placement) finish: tests and shutdown."""
        while self._bg:
            await asyncio.gather(*list(self._bg), return_exceptions=True)

    def _classify(self, cf: CloseFill, pos: _Position) -> CloseReason:
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
                bounded_put(self._accounted, str(tid), None, _REMEMBER)
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

    def _triggered_algo(self, pos: _Position, reason: CloseReason) -> int:
        if reason is CloseReason.SL:
            return pos.sl_id
        if reason is CloseReason.TP:
            return pos.tp_id
        return 0

    async def _build_trade(self, pos: _Position, cf: CloseFill, reason: CloseReason) -> ClosedTrade:
        qty = pos.closed_qty + cf.qty
        exit_price = (pos.closed_notional + cf.qty * cf.avg_price) / qty if qty > 0 else cf.avg_price
        exit_time = cf.time_ms or self._clock.now_ms()
        funding = clearance = 0.0
        # Funding settles on whole UTC hours (1 h / 4 h / 8 h intervals on Binance): a position
        # that spans no whole hour paid none, and only a liquidation has a clearance fee. This
        # skips most income-history calls of short trades (a REST round trip in live).
        first_hour = -(-pos.entry_time_ms // _HOUR_MS) * _HOUR_MS
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

    def _entry_fee(self, pos: _Position) -> float:
        if pos.entry_order_id:
            ef = self._tracker.entry_fill(pos.entry_order_id)
            if ef is not None:
                return ef.commission_sum
        return pos.entry_fee or 0.0

    async def _income_since_entry(self, pos: _Position, exit_time: int) -> tuple[float, float]:
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
                bounded_put(self._accounted, r.trade_id, None, _REMEMBER)
        return funding, clearance

    async def _finish(
        self, pos: _Position, trade: ClosedTrade, *, triggered_algo: int = 0, released: bool = False
    ) -> None:
        """Journal, risk, sibling cancel, kill switch, wake a waiting reverse, notify (in that order)."""
        self._journal.record_trade(trade)
        self.closed_trades.append(trade)
        if released:
            await self._risk.record_pnl(trade.net_pnl)
        else:
            await self._risk.close(self.symbol, trade.net_pnl)
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

    async def _record_late(self, pos: _Position, cf: CloseFill) -> None:
        """Fills of a close that was released on timeout: record the real trade, add its PnL."""
        reason = self._classify(cf, pos)
        for tid in cf.trade_ids:
            bounded_put(self._accounted, str(tid), None, _REMEMBER)
        trade = await self._build_trade(pos, cf, reason)
        self._journal.record_event(
            self._clock.now_ms(),
            "late_close",
            self.symbol,
            f"late fills of order {cf.order_id} recorded",
            {"net_pnl": trade.net_pnl},
        )
        await self._finish(pos, trade, released=True)

    # ================================================================ reconciliation
    async def reconcile(self) -> None:
        """Periodic REST check (SPEC §13 rows 5, 6): SYNC close of phantom positions, adoption of
        unknown ones, and re-placement of missing protective orders."""
        if self._busy:
            return
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

    # ================================================================ helpers
    async def _symbol_filters(self) -> SymbolFilters:
        """Exchange filters cached 24 h on the injected clock; a stale cache beats no cache."""
        now = self._clock.now_ms()
        if self._filters is not None and now - self._filters_at < FILTERS_TTL_MS:
            return self._filters
        try:
            self._filters = await self._ex.symbol_filters(self.symbol)
            self._filters_at = now
        except ExchangeError:
            if self._filters is None:
                raise
            log.warning("%s: exchange info refresh failed; using the cached filters", self.symbol)
        return self._filters

    def _journal_result(self, row: int, res: OrderResult) -> None:
        """The exchange's answer to a MARKET order, persisted before the bot acts on it."""
        self._journal.record_order_result(
            row,
            time_ms=self._clock.now_ms(),
            status=res.status.value,
            order_id=res.order_id,
            avg_price=res.avg_price,
            executed_qty=res.executed_qty,
        )

    def _journal_error(self, row: int, exc: BaseException) -> None:
        """A refused or failed request: the journal shows what was attempted and why it failed."""
        self._journal.record_order_result(row, time_ms=self._clock.now_ms(), status="ERROR", reason=str(exc))

    def _cid(self, tag: str) -> str:
        """Client order id: ``pb<tag>-<time>-<seq>`` (≤ 36 chars, Binance's allowed characters)."""
        self._seq += 1
        return f"pb{tag}-{self._clock.now_ms()}-{self._seq}"
