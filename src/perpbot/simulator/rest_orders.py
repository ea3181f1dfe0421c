"""Order routes: ``order`` (POST / GET / DELETE), ``openOrders``, ``allOpenOrders``, and the algo
service: ``algoOrder`` (POST / GET / DELETE), ``openAlgoOrders``, ``algoOpenOrders``.

Conditional types on ``/fapi/v1/order`` are refused with -4120 (Binance since 2025-12-09); the
matching itself is ``MatchingEngine``'s (MARKET orders fill at the next candle's open).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from perpbot.domain.types import AlgoStatus, OrderSide, OrderStatus, OrderType
from perpbot.exchange.binance.codec.orders import algo_json, order_json
from perpbot.simulator.errors import BinanceError
from perpbot.simulator.faults import REJECT_MESSAGES
from perpbot.simulator.params import Params
from perpbot.simulator.venue import AlgoRecord, check_client_id

if TYPE_CHECKING:
    from perpbot.simulator.server import SimServer

CONDITIONAL_NAMES = ("STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET")
ORDER_NAMES = ("LIMIT", "MARKET", *CONDITIONAL_NAMES)


def _reject_fault(srv: SimServer, path: str, symbol: str, kind: str) -> None:
    f = srv.faults.take("reject_orders", path, symbol, order_kind=kind) if srv.faults.active else None
    if f is not None:
        code = int(f.params["code"])
        raise BinanceError(code, REJECT_MESSAGES[code])


def _position_side(p: Params) -> None:
    ps = p.get("positionSide")
    if ps not in (None, "BOTH"):
        raise BinanceError(-4061, "Order's position side does not match user's setting.")


def new_order(srv: SimServer, p: Params) -> Any:
    v = srv.venue
    symbol = v.symbol(p.req("symbol"))
    side = p.enum("side", OrderSide, -1117)
    tname = p.req("type")
    if tname not in ORDER_NAMES:
        raise BinanceError(-1116, "Invalid orderType.")
    if tname in CONDITIONAL_NAMES:
        raise BinanceError(
            -4120, "Order type not supported for this endpoint. Please use the Algo Order API."
        )
    _position_side(p)
    cid = p.get("newClientOrderId") or ""
    if cid:
        check_client_id("newClientOrderId", cid)
    qty = p.decimal("quantity")
    reduce_only = p.bool("reduceOnly")
    resp_type = p.get("newOrderRespType") or "ACK"
    if resp_type not in ("ACK", "RESULT"):
        raise BinanceError(-1130, "Data sent for parameter 'newOrderRespType' is not valid.")
    if tname == "LIMIT":
        raise BinanceError(-1116, "Invalid orderType: this simulator matches MARKET orders only.")
    _reject_fault(srv, "/fapi/v1/order", symbol, "order")
    _result, order = v.market_order(symbol, side, qty, reduce_only, cid, OrderType.MARKET)
    rec = v.orders[order.order_id]
    if resp_type == "RESULT":
        return order_json(rec.order, update_ms=rec.update_ms)
    # ACK: the order as accepted (status NEW, nothing executed yet from the client's view).
    ack = replace(rec.order, status=OrderStatus.NEW, executed_qty=0.0, avg_price=0.0)
    return order_json(ack, update_ms=rec.order.time_ms)


def _order_ref(p: Params) -> tuple[str | None, str | None]:
    oid, cid = p.get("orderId"), p.get("origClientOrderId")
    if oid is None and cid is None:
        raise BinanceError(
            -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
        )
    return oid, cid


def get_order(srv: SimServer, p: Params) -> Any:
    symbol = srv.venue.symbol(p.req("symbol"))
    rec = srv.venue.find_order(symbol, *_order_ref(p))
    return order_json(rec.order, update_ms=rec.update_ms)


def cancel_order(srv: SimServer, p: Params) -> Any:
    symbol = srv.venue.symbol(p.req("symbol"))
    oid, cid = _order_ref(p)
    try:
        rec = srv.venue.find_order(symbol, oid, cid)
    except BinanceError:
        raise BinanceError(-2011, "Unknown order sent.") from None
    if rec.order.status in (
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.EXPIRED,
        OrderStatus.REJECTED,
    ):
        raise BinanceError(-2011, "Unknown order sent.")
    srv.venue.call(srv.venue.engine.cancel_order, symbol, rec.order.order_id)
    return order_json(rec.order, update_ms=rec.update_ms)


def open_orders(srv: SimServer, p: Params) -> Any:
    v = srv.venue
    sym = p.get("symbol")
    symbols = [v.symbol(sym)] if sym else v.market.symbols
    return [order_json(o) for s in symbols for o in v.engine.open_orders(s)]


def cancel_all_orders(srv: SimServer, p: Params) -> Any:
    symbol = srv.venue.symbol(p.req("symbol"))
    srv.venue.call(srv.venue.engine.cancel_all_orders, symbol)
    return {"code": 200, "msg": "The operation of cancel all open order is done."}


# ---------------------------------------------------------------------------------------- algo


def _algo_out(srv: SimServer, rec: AlgoRecord) -> dict[str, Any]:
    qty, px = srv.venue.algo_fill(rec)
    return algo_json(
        rec.order,
        update_ms=rec.update_ms,
        actual_order_id=rec.actual_order_id,
        executed_qty=qty,
        avg_price=px,
    )


def new_algo_order(srv: SimServer, p: Params) -> Any:
    v = srv.venue
    symbol = v.symbol(p.req("symbol"))
    algo_type = p.req("algoType")
    if algo_type != "CONDITIONAL":
        raise BinanceError(-1130, "Data sent for parameter 'algoType' is not valid.")
    side = p.enum("side", OrderSide, -1117)
    tname = p.req("type")
    if tname not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
        if tname in ORDER_NAMES:
            raise BinanceError(
                -1116,
                f"Invalid orderType: algo orders are STOP_MARKET or TAKE_PROFIT_MARKET, not {tname}.",
            )
        raise BinanceError(-1116, "Invalid orderType.")
    _position_side(p)
    cid = p.get("clientAlgoId") or ""
    if cid:
        check_client_id("clientAlgoId", cid)
    trigger = p.decimal("triggerPrice")
    close_position = p.bool("closePosition")
    reduce_only = p.bool("reduceOnly")
    if close_position:
        if p.get("quantity") is not None or p.get("reduceOnly") is not None:
            raise BinanceError(-1106, "Parameter 'quantity' sent when not required.")
        f = v.engine.symbol_filters(symbol)
        pos = v.engine.position(symbol)
        qty = pos.quantity if pos is not None else f.max_qty
        reduce_only = True
    else:
        qty = p.decimal("quantity")
    _reject_fault(srv, "/fapi/v1/algoOrder", symbol, "algo")
    order = v.place_algo(symbol, OrderType(tname), side, qty, trigger, reduce_only, cid)
    return _algo_out(srv, v.algos[order.algo_id])


def _algo_ref(p: Params) -> tuple[str | None, str | None]:
    aid, cid = p.get("algoId"), p.get("clientAlgoId")
    if aid is None and cid is None:
        raise BinanceError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!")
    return aid, cid


def get_algo_order(srv: SimServer, p: Params) -> Any:
    v = srv.venue
    sym = p.get("symbol")
    aid, cid = _algo_ref(p)
    if sym is None:  # Binance's algo query does not require the symbol
        rec = next(
            (
                r
                for r in v.algos.values()
                if str(r.order.algo_id) == aid or (cid and r.order.client_algo_id == cid)
            ),
            None,
        )
        if rec is None:
            raise BinanceError(-2013, "Order does not exist.")
    else:
        rec = v.find_algo(v.symbol(sym), aid, cid)
    return _algo_out(srv, rec)


def cancel_algo_order(srv: SimServer, p: Params) -> Any:
    v = srv.venue
    sym = p.get("symbol")
    aid, cid = _algo_ref(p)
    try:
        if sym is None:
            rec = next(
                r
                for r in v.algos.values()
                if str(r.order.algo_id) == aid or (cid and r.order.client_algo_id == cid)
            )
        else:
            rec = v.find_algo(v.symbol(sym), aid, cid)
    except (BinanceError, StopIteration):
        raise BinanceError(-2011, "Unknown order sent.") from None
    if rec.order.status is not AlgoStatus.NEW:
        raise BinanceError(-2011, "Unknown order sent.")
    v.cancel_algo(rec.order.symbol, rec.order.algo_id)
    return {
        "algoId": rec.order.algo_id,
        "clientAlgoId": rec.order.client_algo_id,
        "code": "200",
        "msg": "success",
    }


def open_algo_orders(srv: SimServer, p: Params) -> Any:
    v = srv.venue
    sym = p.get("symbol")
    symbol = v.symbol(sym) if sym else None
    return [_algo_out(srv, r) for r in v.open_algos(symbol)]


def cancel_all_algo_orders(srv: SimServer, p: Params) -> Any:
    symbol = srv.venue.symbol(p.req("symbol"))
    srv.venue.cancel_all_algos(symbol)
    return {"code": 200, "msg": "The operation of cancel all open order is done."}
