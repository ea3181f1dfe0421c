"""User-data stream: every raw account event through the codec, in order, nothing lost.

What ccxt.pro gets wrong and this does instead (the reference, §2):
- each ``ORDER_TRADE_UPDATE`` becomes its own domain event (partial fills are not merged);
- the listen key is kept alive by our own timer every 30 minutes (PUT), not once;
- a new key is taken (POST) on every connect, on -1125 from the keep-alive, and on
  ``listenKeyExpired``, which closes the socket at once instead of being ignored;
- after every (re)connect, before the new socket's frames are read, a REST resync recovers what
  happened while deaf: executions from ``userTrades`` that the stream never delivered become
  ``ORDER_TRADE_UPDATE`` (x=TRADE) events, and algo orders that left the open book become
  ``ALGO_UPDATE`` events with their final status. Events seen twice (stream and resync) are
  delivered once. ``resync_listeners`` are then awaited so the runtime can reconcile positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from perpbot import latency
from perpbot.aio import cancel_and_wait
from perpbot.domain.events import AlgoUpdate, ExchangeEvent, OrderTradeUpdate
from perpbot.domain.types import AlgoStatus, Fill, OrderStatus
from perpbot.exchange.binance.codec.events import event_from_json
from perpbot.exchange.binance.codec.orders import order_from_json, order_type
from perpbot.exchange.binance.ws import STOP_WAIT_S, ResilientSocket, StreamSettings
from perpbot.exchange.errors import ExchangeError

if TYPE_CHECKING:
    from perpbot.exchange.binance.adapter import BinanceExchange

log = logging.getLogger(__name__)

LISTEN_KEY_UNKNOWN = -1125
KEEPALIVE_S = 30 * 60.0
SEEN_CAP = 50_000
EVENT_KINDS = ("ORDER_TRADE_UPDATE", "ALGO_UPDATE", "ACCOUNT_UPDATE")


def dedupe_key(ev: ExchangeEvent) -> tuple[Any, ...] | None:
    if isinstance(ev, OrderTradeUpdate):
        if ev.execution_type == "TRADE":
            return ("t", ev.symbol, ev.trade_id)
        return ("o", ev.order_id, ev.execution_type, ev.status.value)
    if isinstance(ev, AlgoUpdate):
        return ("a", ev.algo_id, ev.status.value)
    return None


class UserStream:
    """The account's event stream for ``exchange`` (handlers registered with ``subscribe``)."""

    def __init__(
        self,
        exchange: BinanceExchange,
        symbols: list[str],
        *,
        settings: StreamSettings | None = None,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self.ex = exchange
        self.symbols = [s.upper() for s in symbols]
        self.keepalive_s = keepalive_s
        self.listen_key: str | None = None
        self.keys_taken = 0
        self.keepalives = 0
        self.resyncs = 0
        self.recovered = 0  # events rebuilt from REST after a deaf period
        # Event frames received, and fully handled (every handler returned), duplicates included:
        # a driver that knows how many the venue sent waits for these counts, not for silence.
        self.frames_received = 0
        self.frames_handled = 0
        self.resync_listeners: list[Callable[[], Awaitable[None]]] = []
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._trade_since: dict[str, int] = {}
        self._open_algos: dict[int, tuple[str, AlgoStatus]] = {}
        self._baseline_done = False
        self._keepalive_task: asyncio.Task[None] | None = None
        # Binance pings an idle user stream every 3 minutes: any frame proves the socket alive.
        settings = settings or StreamSettings(silence_s=600.0, data_only=False)
        # Its error texts quote the URL and so the listen key: ``ws._one_line`` masks it.
        self.socket = ResilientSocket("user", self._url, self._on_frame, self._resync, settings)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.socket.start()
        if self._keepalive_task is None:
            self._keepalive_task = asyncio.get_running_loop().create_task(
                self._keepalive(), name="listen-key"
            )

    async def stop(self) -> None:
        if self._keepalive_task is not None:
            await cancel_and_wait(self._keepalive_task, STOP_WAIT_S)
            self._keepalive_task = None
        await self.socket.stop()
        if self.listen_key is not None:
            with contextlib.suppress(ExchangeError):
                await self.ex.rest.call("fapiPrivateDeleteListenKey")
            self.listen_key = None

    async def _url(self) -> str:
        """A fresh POST on every connect (Binance returns the active key or a new one)."""
        d = await self.ex.rest.call("fapiPrivatePostListenKey")
        self.listen_key = str(d["listenKey"])
        self.keys_taken += 1
        return self.ex.endpoints.private_stream_url(self.listen_key)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            if self.listen_key is None:
                continue
            try:
                await self.ex.rest.call("fapiPrivatePutListenKey")
                self.keepalives += 1
            except ExchangeError as exc:
                if exc.code == LISTEN_KEY_UNKNOWN:
                    self.socket.reconnect("listen key unknown (-1125)")
                else:
                    log.warning("user stream: listen-key keep-alive failed (%s)", exc)

    # ------------------------------------------------------------------ frames

    async def _on_frame(self, frame: Any) -> None:
        if not isinstance(frame, dict):
            return
        data = frame["data"] if isinstance(frame.get("data"), dict) and "stream" in frame else frame
        kind = data.get("e")
        if kind == "listenKeyExpired":
            raise ConnectionError("listenKeyExpired: a new key is needed")
        if kind == "error":
            raise ConnectionError(f"stream error payload: {data}")
        if kind == "ACCOUNT_CONFIG_UPDATE":  # leverage / margin changed: set them again
            ac = data.get("ac")
            self.ex.config.forget(str(ac["s"]) if isinstance(ac, dict) and "s" in ac else None)
            return
        if kind not in EVENT_KINDS:
            return
        self.frames_received += 1
        try:
            try:
                ev = event_from_json(data)
            except (KeyError, ValueError, TypeError) as exc:
                # A value Binance added later, a field missing: that one frame is skipped (loudly).
                # Raising would cut the connection and lose every frame queued behind it.
                o = data.get("o") if isinstance(data.get("o"), dict) else {}
                log.error("user stream: %s for %s not understood (%r); skipped", kind, o.get("s"), exc)
                return
            if ev is not None:
                await self._emit(ev)
        finally:
            self.frames_handled += 1

    async def _emit(self, ev: ExchangeEvent) -> bool:
        """Deliver ``ev`` unless it was delivered before; True when delivered."""
        key = dedupe_key(ev)
        if key is not None:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > SEEN_CAP:
                self._seen.popitem(last=False)
        self._track(ev)
        probe = latency.PROBE  # bench/bench_runtime.py only
        started = time.monotonic() if probe is not None else 0.0
        await self.ex.dispatch(ev)
        if probe is not None and isinstance(ev, OrderTradeUpdate) and ev.execution_type == "TRADE":
            probe.execution(ev.symbol, started)
        return True

    def _track(self, ev: ExchangeEvent) -> None:
        if isinstance(ev, OrderTradeUpdate) and ev.execution_type == "TRADE":
            self._trade_since[ev.symbol] = max(self._trade_since.get(ev.symbol, 0), ev.trade_time_ms)
        elif isinstance(ev, AlgoUpdate):
            if ev.status in (AlgoStatus.NEW, AlgoStatus.TRIGGERING):
                self._open_algos[ev.algo_id] = (ev.symbol, ev.status)
            else:
                self._open_algos.pop(ev.algo_id, None)

    # ------------------------------------------------------------------ resync

    async def _resync(self) -> None:
        """After a (re)connect: recover the executions and algo changes the stream missed."""
        self.ex.config.forget()  # a config event may have been missed while deaf
        if not self._baseline_done:
            await self._baseline()
            return
        self.resyncs += 1
        for sym in self.symbols:
            new = 0
            for ev in await self._missed_algos(sym):
                self.recovered += 1
                new += await self._emit(ev)
            for ev in await self._missed_trades(sym):
                self.recovered += 1
                new += await self._emit(ev)
            if new:
                log.warning(
                    "user stream: %d missed %s event(s) recovered from REST after reconnecting", new, sym
                )
        for listener in tuple(self.resync_listeners):
            await listener()

    async def _baseline(self) -> None:
        """First connect: what already happened is history, not news."""
        for sym in self.symbols:
            recent = await self.ex.rest.call("fapiPrivateGetUserTrades", {"symbol": sym, "limit": 1000})
            for r in recent:
                self._seen[("t", sym, int(r["id"]))] = None
            self._trade_since[sym] = max((int(r["time"]) for r in recent), default=0)
            for a in await self.ex.open_conditional_orders(sym):
                self._open_algos[a.algo_id] = (sym, a.status)
        self._baseline_done = True

    async def _missed_algos(self, symbol: str) -> list[AlgoUpdate]:
        still_open = {a.algo_id: a for a in await self.ex.open_conditional_orders(symbol)}
        out: list[AlgoUpdate] = []
        for algo_id, (sym, _status) in sorted(self._open_algos.items()):
            if sym != symbol or algo_id in still_open:
                continue
            a = await self.ex.get_conditional(symbol, algo_id=algo_id)
            out.append(
                AlgoUpdate(
                    event_time_ms=a.time_ms,
                    symbol=a.symbol,
                    algo_id=a.algo_id,
                    client_algo_id=a.client_algo_id,
                    side=a.side,
                    order_type=a.type,
                    status=a.status,
                    quantity=a.quantity,
                    trigger_price=a.trigger_price,
                    reduce_only=a.reduce_only,
                    triggered_order_id=a.triggered_order_id,
                )
            )
        for a in still_open.values():
            self._open_algos.setdefault(a.algo_id, (symbol, a.status))
        return out

    async def _missed_trades(self, symbol: str) -> list[OrderTradeUpdate]:
        fills = await self.ex.user_trades(symbol, self._trade_since.get(symbol, 0))
        missing = [f for f in fills if ("t", symbol, f.trade_id) not in self._seen]
        if not missing:
            return []
        orders: dict[int, dict[str, Any]] = {}
        for oid in sorted({f.order_id for f in missing}):
            orders[oid] = await self.ex.rest.call("fapiPrivateGetOrder", {"symbol": symbol, "orderId": oid})
        out: list[OrderTradeUpdate] = []
        for f in sorted(missing, key=lambda x: (x.time_ms, x.trade_id)):
            upto = [
                g
                for g in fills
                if g.order_id == f.order_id and (g.time_ms, g.trade_id) <= (f.time_ms, f.trade_id)
            ]
            qty = sum(g.quantity for g in upto)
            notional = sum(g.quantity * g.price for g in upto)
            out.append(_trade_event(f, orders[f.order_id], qty, notional))
        return out


def _trade_event(f: Fill, order: dict[str, Any], cum_qty: float, cum_notional: float) -> OrderTradeUpdate:
    """An ``ORDER_TRADE_UPDATE`` (x=TRADE) rebuilt from one ``userTrades`` row and its order."""
    o = order_from_json(order)
    done = cum_qty >= o.quantity - 1e-12 or (
        o.status is OrderStatus.FILLED and cum_qty >= o.executed_qty - 1e-12
    )
    return OrderTradeUpdate(
        event_time_ms=f.time_ms,
        symbol=f.symbol,
        order_id=f.order_id,
        client_order_id=o.client_order_id,
        side=f.side,
        order_type=o.type,
        original_type=order_type(order.get("origType") or o.type.value),
        execution_type="TRADE",
        status=OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED,
        reduce_only=o.reduce_only,
        quantity=o.quantity,
        last_filled_qty=f.quantity,
        cumulative_filled_qty=cum_qty,
        last_filled_price=f.price,
        avg_price=cum_notional / cum_qty if cum_qty > 0 else 0.0,
        commission=f.commission,
        realized_pnl=f.realized_pnl,
        trade_id=f.trade_id,
        trade_time_ms=f.time_ms,
    )
