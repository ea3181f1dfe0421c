"""Market streams: ``/market/ws[/<n>]``, ``/market/stream?streams=a/b`` (and the ``/public/``
paths the official libraries open), with SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS.

Only ``<symbol>@kline_15m`` carries data (the recorded candles are 15-minute); other well-formed
stream names are accepted, listed and silent, as a Binance stream with no activity would be.
Each event is encoded once per stream and queued to every subscriber.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from perpbot.data.schema import BAR_MS
from perpbot.exchange.binance.codec.market import kline_event
from perpbot.simulator.config import SimulatorConfig
from perpbot.simulator.faults import FaultBook
from perpbot.simulator.ws_conn import StreamConn

INTERVAL = "15m"
STREAM_RE = re.compile(r"^[a-z0-9_]+@[a-zA-Z0-9_@]+$")
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class MarketHub:
    """Subscriptions by stream name, and the kline sink the replay calls per candle."""

    def __init__(self, cfg: SimulatorConfig, faults: FaultBook) -> None:
        self.cfg = cfg
        self.faults = faults
        self.subs: dict[str, set[StreamConn]] = {}
        self.conns: set[StreamConn] = set()
        self._silenced: set[tuple[str, int]] = set()  # (symbol, open) whose candle a fault silenced

    # ------------------------------------------------------------------ replay side

    def on_path(
        self, symbol: str, open_ms: int, path: tuple[float, float, float, float], volume: float, now_ms: int
    ) -> None:
        """The intra-candle updates (x=false) along the engine's path, before the bar is processed.
        A ``silent_stream`` fault silences the candle whole: these and its closed kline."""
        stream = f"{symbol.lower()}@kline_{INTERVAL}"
        subs = self.subs.get(stream)
        if not subs:
            return
        if self.faults.active and self.faults.take("silent_stream", stream="market"):
            self._silenced.add((symbol, open_ms))
            return
        o = path[0]
        hi = lo = o
        texts: list[dict[str, Any]] = []
        for k, p in enumerate(path[:3]):
            hi, lo = max(hi, p), min(lo, p)
            ev_ms = open_ms + k * (BAR_MS // 3)
            texts.append(
                kline_event(symbol, INTERVAL, ev_ms, open_ms, (o, hi, lo, p, volume * k / 3.0), False, BAR_MS)
            )
        self._push(stream, subs, texts)

    def on_candle(
        self, symbol: str, open_ms: int, path: tuple[float, float, float, float], volume: float, now_ms: int
    ) -> None:
        """The closed kline (x=true), once every symbol's bar was processed (``Replay``)."""
        if (symbol, open_ms) in self._silenced:
            self._silenced.discard((symbol, open_ms))
            return
        stream = f"{symbol.lower()}@kline_{INTERVAL}"
        subs = self.subs.get(stream)
        if not subs:
            return
        ev = kline_event(
            symbol,
            INTERVAL,
            open_ms + BAR_MS,
            open_ms,
            (path[0], max(path), min(path), path[3], volume),
            True,
            BAR_MS,
        )
        self._push(stream, subs, [ev])

    @staticmethod
    def _push(stream: str, subs: set[StreamConn], events: list[dict[str, Any]]) -> None:
        for conn in tuple(subs):
            for ev in events:
                conn.push(_dumps({"stream": stream, "data": ev}) if conn.combined else _dumps(ev))

    def drop_all(self) -> int:
        conns = tuple(self.conns)
        for c in conns:
            c.abort()
        return len(conns)

    # ------------------------------------------------------------------ connection side

    def handler(self, combined: bool) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            conn = StreamConn(request, self.cfg, "market", combined)
            initial = [s for s in request.query.get("streams", "").split("/") if s] if combined else []
            if len(initial) > self.cfg.max_streams:
                raise web.HTTPBadRequest(text=f"Too many streams (at most {self.cfg.max_streams})")
            bad = next((s for s in initial if not self.valid_stream(s)), None)
            if bad is not None:
                raise web.HTTPBadRequest(text=f"Invalid stream name {bad!r}")
            for s in initial:
                self._sub(conn, s)
            self.conns.add(conn)
            try:
                return await conn.serve(self._on_text)
            finally:
                self.conns.discard(conn)
                for s in tuple(conn.streams):
                    self._unsub(conn, s)

        return handle

    def _sub(self, conn: StreamConn, stream: str) -> None:
        conn.streams.add(stream)
        self.subs.setdefault(stream, set()).add(conn)

    def _unsub(self, conn: StreamConn, stream: str) -> None:
        conn.streams.discard(stream)
        subs = self.subs.get(stream)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.subs[stream]

    async def _on_text(self, conn: StreamConn, text: str) -> None:
        reply = self.handle_request(conn, text)
        if reply is not None:
            conn.push(_dumps(reply))

    def handle_request(self, conn: StreamConn, text: str) -> dict[str, Any] | None:
        """Binance's live-subscription protocol; errors use its codes (0..3) and echo the id."""
        try:
            msg = json.loads(text)
        except json.JSONDecodeError as exc:
            return {"error": {"code": 3, "msg": f"Invalid JSON: {exc.msg} at column {exc.colno}"}, "id": None}
        if not isinstance(msg, dict):
            return {"error": {"code": 2, "msg": "Invalid request: request must be a JSON object"}, "id": None}
        rid = msg.get("id")
        if not (rid is None or (isinstance(rid, int) and not isinstance(rid, bool)) or isinstance(rid, str)):
            return {
                "error": {"code": 1, "msg": "Invalid value type: expected id to be an integer or string"},
                "id": None,
            }
        unknown = set(msg) - {"method", "params", "id"}
        if unknown:
            return {"error": {"code": 0, "msg": f"Unknown property: {sorted(unknown)[0]}"}, "id": rid}
        method = msg.get("method")
        if method not in METHODS:
            return {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": rid}
        params = msg.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.streams), "id": rid}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return {"result": False if method == "GET_PROPERTY" else None, "id": rid}
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return {
                "error": {"code": 1, "msg": "Invalid value type: expected params to be a list of strings"},
                "id": rid,
            }
        bad = next((p for p in params if not self.valid_stream(p)), None)
        if bad is not None:
            return {"error": {"code": 2, "msg": f"Invalid request: invalid stream name {bad!r}"}, "id": rid}
        if method == "SUBSCRIBE":
            if len(conn.streams | set(params)) > self.cfg.max_streams:
                return {
                    "error": {"code": 2, "msg": f"Invalid request: more than {self.cfg.max_streams} streams"},
                    "id": rid,
                }
            for p in params:
                self._sub(conn, p)
        else:
            for p in params:
                self._unsub(conn, p)
        return {"result": None, "id": rid}

    def valid_stream(self, name: str) -> bool:
        return bool(STREAM_RE.match(name))
