"""Order shapes: normal orders (``/fapi/v1/order``) and conditional orders (``/fapi/v1/algoOrder``),
each writer beside its reader.

Separate because an order's REST shape is what a bot recovers with after a timeout (by id or
client id), so its fields are checked on their own against Binance's documentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perpbot.domain.types import (
    AlgoStatus,
    ConditionalOrder,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
)
from perpbot.exchange.binance.codec.decimals import Json, fmt, num

# Values Binance sends that the domain does not model, read as what they amount to for the bot:
# an order of the account that is not the bot's (a person's trailing stop or stop-limit) must not
# make its decoding fail (it would cut the user stream and lose the frames behind it, or fail a
# REST read of the open orders), and an order expired by self-trade prevention is just expired.
_TYPE_AS = {
    "STOP": OrderType.LIMIT,  # stop-limit: a LIMIT order once triggered
    "TAKE_PROFIT": OrderType.LIMIT,
    "TRAILING_STOP_MARKET": OrderType.MARKET,
}
_STATUS_AS = {"EXPIRED_IN_MATCH": OrderStatus.EXPIRED}


def order_type(v: Any) -> OrderType:
    """Binance's order type (``o``, ``ot``, ``type``, ``origType``, ``orderType``) as the domain's."""
    s = str(v)
    return _TYPE_AS.get(s) or OrderType(s)


def order_status(v: Any) -> OrderStatus:
    """Binance's order status (``X``, ``status``) as the domain's."""
    s = str(v)
    return _STATUS_AS.get(s) or OrderStatus(s)


def order_json(o: Order, *, update_ms: int | None = None, orig_type: OrderType | None = None) -> Json:
    """A normal order as ``GET/POST/DELETE /fapi/v1/order`` return it (one-way mode)."""
    return {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": o.status.value,
        "clientOrderId": o.client_order_id,
        "price": "0",
        "avgPrice": fmt(o.avg_price),
        "origQty": fmt(o.quantity),
        "executedQty": fmt(o.executed_qty),
        "cumQty": fmt(o.executed_qty),
        "cumQuote": fmt(o.executed_qty * o.avg_price),
        "timeInForce": "GTC",
        "type": o.type.value,
        "reduceOnly": o.reduce_only,
        "closePosition": False,
        "side": o.side.value,
        "positionSide": "BOTH",
        "stopPrice": "0",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": (orig_type or o.type).value,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0,
        "time": o.time_ms,
        "updateTime": o.time_ms if update_ms is None else update_ms,
    }


def order_from_json(d: Mapping[str, Any]) -> Order:
    return Order(
        symbol=str(d["symbol"]),
        order_id=int(d["orderId"]),
        side=OrderSide(d["side"]),
        type=order_type(d["type"]),
        quantity=num(d["origQty"]),
        status=order_status(d["status"]),
        reduce_only=bool(d.get("reduceOnly", False)),
        executed_qty=num(d.get("executedQty")),
        avg_price=num(d.get("avgPrice")),
        client_order_id=str(d.get("clientOrderId", "")),
        time_ms=int(d.get("time", d.get("updateTime", 0))),
    )


def algo_json(
    a: ConditionalOrder,
    *,
    update_ms: int | None = None,
    actual_order_id: int = 0,
    executed_qty: float = 0.0,
    avg_price: float = 0.0,
) -> Json:
    """A conditional order as ``/fapi/v1/algoOrder`` and ``openAlgoOrders`` return it."""
    return {
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.type.value,
        "symbol": a.symbol,
        "side": a.side.value,
        "positionSide": "BOTH",
        "timeInForce": "GTC",
        "quantity": fmt(a.quantity),
        "algoStatus": a.status.value,
        "actualOrderId": str(actual_order_id) if actual_order_id else "",
        "actualPrice": fmt(avg_price),
        "triggerPrice": fmt(a.trigger_price),
        "price": "0",
        "icebergQuantity": None,
        "tpTriggerPrice": "0",
        "tpPrice": "0",
        "slTriggerPrice": "0",
        "slPrice": "0",
        "tpOrderType": "",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": "CONTRACT_PRICE",
        "priceMatch": "NONE",
        "closePosition": False,
        "priceProtect": False,
        "reduceOnly": a.reduce_only,
        "createTime": a.time_ms,
        "updateTime": a.time_ms if update_ms is None else update_ms,
        "triggerTime": 0,
        "goodTillDate": 0,
        "executedQty": fmt(executed_qty),
    }


def algo_from_json(d: Mapping[str, Any]) -> ConditionalOrder:
    return ConditionalOrder(
        symbol=str(d["symbol"]),
        algo_id=int(d["algoId"]),
        side=OrderSide(d["side"]),
        type=order_type(d["orderType"]),
        quantity=num(d["quantity"]),
        trigger_price=num(d["triggerPrice"]),
        status=AlgoStatus(d["algoStatus"]),
        reduce_only=bool(d.get("reduceOnly", True)),
        client_algo_id=str(d.get("clientAlgoId", "")),
        time_ms=int(d.get("createTime", 0)),
    )
