"""``/sim/`` control endpoints (loopback only, never mixed into the Binance routes):
``GET /sim/state``, ``POST /sim/advance?bars=N[&close_gap_ms=G]``, ``POST /sim/faults``, ``GET /sim/audit``
(``simulator/audit.py``: protection gaps, every execution and income row).

``GET /sim/state?brief=1`` leaves out what grows with the run or the book (the fault log, the
open orders and algo orders): a harness that polls the state many times a second (the chaos
run) reads the fault log once, at the end, instead of with every poll."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from perpbot.exchange.binance.codec.decimals import fmt
from perpbot.exchange.binance.codec.orders import algo_json
from perpbot.simulator.config import is_loopback
from perpbot.simulator.errors import BinanceError, bad_param, json_response
from perpbot.simulator.faults import parse_faults

if TYPE_CHECKING:
    from perpbot.simulator.server import SimServer

MAX_ADVANCE = 1_000_000
MAX_CLOSE_GAP_MS = 10_000  # per candle: ``Replay.advance_async``'s wait between fills and closes
SRV_KEY: web.AppKey[Any] = web.AppKey("perpbot_simulator", object)


def _loopback(request: web.Request) -> None:
    if not is_loopback(request.remote or ""):
        raise BinanceError(-1000, "The /sim/ control endpoints answer loopback clients only.", status=403)


BRIEF_OMITS = ("faults", "open_orders", "algo_orders")


def state(srv: SimServer, *, brief: bool = False) -> dict[str, Any]:
    v = srv.venue
    positions = []
    for s in v.market.symbols:
        pos = v.engine.position(s)
        if pos is not None:
            positions.append(
                {
                    "symbol": s,
                    "side": pos.side.value,
                    "quantity": fmt(pos.quantity),
                    "entryPrice": fmt(pos.entry_price),
                    "leverage": pos.leverage,
                    "liquidationPrice": fmt(pos.liquidation_price),
                }
            )
    out = {
        "replay_time_ms": v.now_ms,
        "next_candle_open_ms": srv.replay.next_open_ms,
        "end_ms": v.market.end_ms,
        "finished": srv.replay.finished,
        "candles": srv.replay.candles,
        "symbols": v.market.symbols,
        "balance": fmt(v.engine.balance()),
        "available_balance": fmt(v.engine.available_balance()),
        "positions": positions,
        "fill_count": v.fill_count,
        "user_events": srv.private_hub.pushed,
        "rate_limits": srv.limiter.state(),
        "listen_key_active": srv.listen_keys.key is not None,
        "connections": {"market": len(srv.market_hub.conns), "private": len(srv.private_hub.conns)},
    }
    if not brief:
        out["open_orders"] = [o.order_id for s in v.market.symbols for o in v.engine.open_orders(s)]
        out["algo_orders"] = [algo_json(r.order, update_ms=r.update_ms) for r in v.open_algos(None)]
        out["faults"] = [f.as_json() for f in srv.faults.log]
    return out


async def get_state(request: web.Request) -> web.StreamResponse:
    srv: SimServer = request.app[SRV_KEY]
    try:
        _loopback(request)
        return json_response(state(srv, brief=request.query.get("brief") == "1"))
    except BinanceError as exc:
        return exc.response()


async def get_audit(request: web.Request) -> web.StreamResponse:
    srv: SimServer = request.app[SRV_KEY]
    try:
        _loopback(request)
        return json_response(srv.audit.report())
    except BinanceError as exc:
        return exc.response()


def _query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    """A whole-number query parameter in ``lo..hi`` (``default`` when absent); -1130 otherwise."""
    raw = request.query.get(name, str(default))
    if not raw.isdigit() or not (lo <= int(raw) <= hi):
        raise bad_param(name, f"Expected {lo}..{hi}.")
    return int(raw)


async def post_advance(request: web.Request) -> web.StreamResponse:
    srv: SimServer = request.app[SRV_KEY]
    try:
        _loopback(request)
        bars = _query_int(request, "bars", 1, 1, MAX_ADVANCE)
        gap_ms = _query_int(request, "close_gap_ms", 0, 0, MAX_CLOSE_GAP_MS)
        n = await srv.replay.advance_async(bars, close_gap_s=gap_ms / 1000.0)
        return json_response(
            {
                "advanced": n,
                "replay_time_ms": srv.venue.now_ms,
                "finished": srv.replay.finished,
                "user_events": srv.private_hub.pushed,
                "fill_count": srv.venue.fill_count,
            }
        )
    except BinanceError as exc:
        return exc.response()


async def post_faults(request: web.Request) -> web.StreamResponse:
    srv: SimServer = request.app[SRV_KEY]
    try:
        _loopback(request)
        try:
            doc = json.loads(await request.text())
            faults = parse_faults(doc, srv.wall_ms(), "body")
        except json.JSONDecodeError as exc:
            raise BinanceError(-1130, f"Fault body is not JSON: {exc.msg}.") from None
        except ValueError as exc:
            raise BinanceError(-1130, str(exc)) from None
        srv.inject(faults)
        return json_response({"injected": [f.as_json() for f in faults]})
    except BinanceError as exc:
        return exc.response()
