"""User-data streams: ``/private/ws?listenKey=K``, ``/private/ws/K`` (raw events) and the official
libraries' ``/private/stream`` (SUBSCRIBE the listen key; combined ``{"stream": K, "data": ev}``).

Every engine event is encoded once by the codec and queued to each connection of the active key.
When the key dies, its connections get ``listenKeyExpired``; they stay open and silent, as on
Binance ("not related to the websocket disconnection"), unless the key was DELETEd, which closes
them. The ``late_events`` and
``swap_events`` faults hold an event back and queue it after later ones (``simulator/faults.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from perpbot.domain.events import ExchangeEvent, OrderTradeUpdate
from perpbot.exchange.binance.codec.events import event_json
from perpbot.exchange.sim.faults import event_kind
from perpbot.simulator.config import SimulatorConfig
from perpbot.simulator.faults import REORDER, Fault, FaultBook
from perpbot.simulator.listen_keys import ListenKeys
from perpbot.simulator.ws_conn import StreamConn


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _label(ev: ExchangeEvent) -> str:
    kind = type(ev).__name__
    return f"{kind}:{ev.execution_type}" if isinstance(ev, OrderTradeUpdate) else kind


@dataclass(slots=True, eq=False)
class _Held:
    """An event a reorder fault holds back: due after ``left`` more deliveries or its timer."""

    ev: ExchangeEvent
    key: str
    left: int
    timer: asyncio.TimerHandle | None = None


class PrivateHub:
    def __init__(
        self, cfg: SimulatorConfig, keys: ListenKeys, faults: FaultBook, now_ms: Callable[[], int]
    ) -> None:
        self.cfg = cfg
        self.keys = keys
        self.faults = faults
        self.now_ms = now_ms
        self.conns: set[StreamConn] = set()
        # Events queued to at least one connection: a driver (``perpbot paper``) waits until its
        # client handled this many instead of waiting for the stream to go quiet.
        self.pushed = 0
        self._held: list[_Held] = []  # events a late/swap fault holds back, oldest first
        keys.on_expire.append(self._expired)
        self.told_expired = 0

    def on_event(self, ev: ExchangeEvent) -> None:
        """Venue listener: fan one event out to the active key's connections."""
        key = self.keys.key
        if key is None or not self.conns:
            return
        if self.faults.active:
            if (f := self.faults.take("silent_stream", stream="private")) is not None:
                f.withheld.append(_label(ev))
                return
            if (f := self._reorder_fault(ev)) is not None:
                self._hold(ev, key, f)
                return
        self._deliver(ev, key)
        if self._held:
            self._count_down()

    def _reorder_fault(self, ev: ExchangeEvent) -> Fault | None:
        x = ev.execution_type if isinstance(ev, OrderTradeUpdate) else None
        symbol = getattr(ev, "symbol", None)
        for kind in REORDER:
            f = self.faults.take(kind, symbol=symbol, event=event_kind(ev), execution_type=x)
            if f is not None:
                return f
        return None

    def _hold(self, ev: ExchangeEvent, key: str, f: Fault) -> None:
        f.withheld.append(_label(ev))
        after = 1 if f.kind == "swap_events" else int(f.params.get("after", 2))
        held = _Held(ev, key, after)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without a loop (direct calls): released by count only
            loop = None
        if loop is not None:
            ms = float(f.params.get("ms", 500))
            held.timer = loop.call_later(ms / 1000.0, self._release, held)
        self._held.append(held)

    def _count_down(self) -> None:
        """One more event went out: release, in holding order, the held events now due."""
        for h in self._held:
            h.left -= 1
        for h in [h for h in self._held if h.left <= 0]:
            self._release(h)

    def _release(self, held: _Held) -> None:
        if held not in self._held:
            return
        self._held.remove(held)
        if held.timer is not None:
            held.timer.cancel()
        self._deliver(held.ev, held.key)  # to its key's connections open now: none if the key died

    def _deliver(self, ev: ExchangeEvent, key: str) -> None:
        data = event_json(ev)
        raw = combined = None
        sent = False
        for conn in tuple(self.conns):
            if conn.listen_key != key:
                continue
            sent = True
            if conn.combined:
                combined = combined or _dumps({"stream": key, "data": data})
                conn.push(combined)
            else:
                raw = raw or _dumps(data)
                conn.push(raw)
        self.pushed += sent

    def push_raw(self, data: dict[str, Any]) -> None:
        """A non-order event (``ACCOUNT_CONFIG_UPDATE``) to the active key's connections; not
        counted in ``pushed``, which counts the order and account events a client handles."""
        key = self.keys.key
        for conn in tuple(self.conns):
            if key is not None and conn.listen_key == key:
                conn.push(_dumps({"stream": key, "data": data}) if conn.combined else _dumps(data))

    def _expired(self, key: str, close: bool) -> None:
        ev = {"e": "listenKeyExpired", "E": self.now_ms(), "listenKey": key}
        self.told_expired = 0  # connections that got the event (none: nobody could see it)
        for conn in tuple(self.conns):
            if conn.listen_key == key:
                self.told_expired += not conn.closed  # an aborted socket (a drop) hears nothing
                conn.push(_dumps({"stream": key, "data": ev}) if conn.combined else _dumps(ev))
                if close:
                    conn.close_soon()

    def drop_all(self) -> int:
        conns = tuple(self.conns)
        for c in conns:
            c.abort()
        return len(conns)

    def handler(self, combined: bool) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            conn = StreamConn(request, self.cfg, "private", combined)
            key = request.match_info.get("key") or request.query.get("listenKey")
            if not combined or key:
                if not key or not self.keys.is_valid(key):
                    # Binance refuses the upgrade for an unknown or expired key.
                    raise web.HTTPBadRequest(
                        text=_dumps({"code": -1125, "msg": "This listenKey does not exist."}),
                        content_type="application/json",
                    )
                conn.listen_key = key
            self.conns.add(conn)
            try:
                return await conn.serve(self._on_text)
            finally:
                self.conns.discard(conn)

        return handle

    async def _on_text(self, conn: StreamConn, text: str) -> None:
        """``/private/stream``: SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS of a listen key."""
        try:
            msg = json.loads(text)
        except json.JSONDecodeError as exc:
            conn.push(_dumps({"error": {"code": 3, "msg": f"Invalid JSON: {exc.msg}"}, "id": None}))
            return
        if not isinstance(msg, dict):
            conn.push(_dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": None}))
            return
        rid, method, params = msg.get("id"), msg.get("method"), msg.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            conn.push(_dumps({"result": [conn.listen_key] if conn.listen_key else [], "id": rid}))
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            conn.push(_dumps({"error": {"code": 2, "msg": f"Invalid request: method {method!r}"}, "id": rid}))
            return
        if method == "UNSUBSCRIBE":
            conn.listen_key = None
            conn.push(_dumps({"result": None, "id": rid}))
            return
        key = next((p for p in params if isinstance(p, str) and self.keys.is_valid(p)), None)
        if key is None:
            conn.push(
                _dumps(
                    {"error": {"code": 2, "msg": "Invalid request: unknown or expired listenKey"}, "id": rid}
                )
            )
            return
        conn.listen_key = key
        conn.push(_dumps({"result": None, "id": rid}))
