"""One codec between Binance USDT-M JSON and the domain objects and events, in both directions.

Why one module: the protocol simulator (``perpbot simulate``) *writes* these shapes and the live
adapter *reads* them. If each side had its own idea of a field, the simulator could agree with
itself and still disagree with Binance; with one codec, the round-trip tests pin both sides at
once and the real-client tests (ccxt) check the shapes against an independent parser.

Why one file of ~600 lines (over the project's usual ~400): every shape is a flat field table,
and keeping both directions of each shape side by side is what makes a mismatch visible in review.

Types follow Binance's documentation: ids, times and counts are JSON integers, flags are
booleans, prices and quantities are decimal *strings* (``fmt``), never floats or exponents.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from perpbot.domain.events import (
    AccountUpdate,
    AlgoUpdate,
    BalanceChange,
    ExchangeEvent,
    OrderTradeUpdate,
    PositionChange,
)
from perpbot.domain.types import (
    AlgoStatus,
    ConditionalOrder,
    Fill,
    Income,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    Side,
    SymbolFilters,
)

Json = dict[str, Any]
ASSET = "USDT"


def fmt(x: float) -> str:
    """A float as Binance's decimal string: shortest round-tripping digits, never an exponent."""
    if x == 0.0:
        return "0"
    s = format(Decimal(repr(float(x))), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def num(v: Any) -> float:
    """A Binance decimal string (or number) as a float."""
    return float(v) if v not in (None, "") else 0.0


# ---------------------------------------------------------------------------------------- market


def symbol_info(f: SymbolFilters, base_asset: str, *, onboard_ms: int = 0) -> Json:
    """One ``exchangeInfo.symbols[]`` entry with the fields clients need (ccxt: marginAsset,
    contractType, orderTypes, PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL)."""
    return {
        "symbol": f.symbol,
        "pair": f.symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": onboard_ms,
        "status": "TRADING",
        "baseAsset": base_asset,
        "quoteAsset": ASSET,
        "marginAsset": ASSET,
        "pricePrecision": _decimals(f.tick_size),
        "quantityPrecision": _decimals(f.step_size),
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(f.tick_size),
                "maxPrice": "1000000",
                "tickSize": fmt(f.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(f.min_qty),
                "maxQty": fmt(f.max_qty),
                "stepSize": fmt(f.step_size),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": fmt(f.min_qty),
                "maxQty": fmt(f.max_qty),
                "stepSize": fmt(f.step_size),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": fmt(f.min_notional)},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": [
            "LIMIT",
            "MARKET",
            "STOP",
            "STOP_MARKET",
            "TAKE_PROFIT",
            "TAKE_PROFIT_MARKET",
            "TRAILING_STOP_MARKET",
        ],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


def filters_from_symbol_info(info: Mapping[str, Any]) -> SymbolFilters:
    """``SymbolFilters`` from one ``exchangeInfo.symbols[]`` entry (what the live adapter caches)."""
    by_type = {flt["filterType"]: flt for flt in info.get("filters", [])}
    price, lot = by_type["PRICE_FILTER"], by_type["LOT_SIZE"]
    notional = by_type.get("MIN_NOTIONAL", {}).get("notional", "5")
    return SymbolFilters(
        symbol=str(info["symbol"]),
        tick_size=num(price["tickSize"]),
        step_size=num(lot["stepSize"]),
        min_qty=num(lot["minQty"]),
        min_notional=num(notional),
        max_qty=num(lot["maxQty"]),
    )


def _decimals(step: float) -> int:
    exp = Decimal(repr(float(step))).normalize().as_tuple().exponent
    return max(0, -int(exp))


# ---------------------------------------------------------------------------------------- orders


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
        type=OrderType(d["type"]),
        quantity=num(d["origQty"]),
        status=OrderStatus(d["status"]),
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
        type=OrderType(d["orderType"]),
        quantity=num(d["quantity"]),
        trigger_price=num(d["triggerPrice"]),
        status=AlgoStatus(d["algoStatus"]),
        reduce_only=bool(d.get("reduceOnly", True)),
        client_algo_id=str(d.get("clientAlgoId", "")),
        time_ms=int(d.get("createTime", 0)),
    )


# ---------------------------------------------------------------------------------------- account


def trade_json(f: Fill) -> Json:
    """One ``GET /fapi/v1/userTrades`` row."""
    buyer = f.side is OrderSide.BUY
    return {
        "buyer": buyer,
        "commission": fmt(f.commission),
        "commissionAsset": ASSET,
        "id": f.trade_id,
        "maker": f.is_maker,
        "orderId": f.order_id,
        "price": fmt(f.price),
        "qty": fmt(f.quantity),
        "quoteQty": fmt(f.price * f.quantity),
        "realizedPnl": fmt(f.realized_pnl),
        "side": f.side.value,
        "positionSide": "BOTH",
        "symbol": f.symbol,
        "time": f.time_ms,
    }


def trade_from_json(d: Mapping[str, Any]) -> Fill:
    return Fill(
        symbol=str(d["symbol"]),
        order_id=int(d["orderId"]),
        trade_id=int(d["id"]),
        side=OrderSide(d["side"]),
        price=num(d["price"]),
        quantity=num(d["qty"]),
        commission=num(d["commission"]),
        realized_pnl=num(d.get("realizedPnl")),
        time_ms=int(d["time"]),
        is_maker=bool(d.get("maker", False)),
    )


def income_json(r: Income, tran_id: int) -> Json:
    """One ``GET /fapi/v1/income`` row; ``tradeId`` is empty for non-trade rows, as on Binance."""
    trade_id = r.trade_id if r.trade_id.isdigit() else ""
    return {
        "symbol": r.symbol,
        "incomeType": r.income_type,
        "income": fmt(r.income),
        "asset": ASSET,
        "info": r.income_type,
        "time": r.time_ms,
        "tranId": tran_id,
        "tradeId": trade_id,
    }


def income_from_json(d: Mapping[str, Any]) -> Income:
    return Income(
        symbol=str(d["symbol"]),
        income_type=str(d["incomeType"]),
        income=num(d["income"]),
        time_ms=int(d["time"]),
        trade_id=str(d.get("tradeId", "")),
    )


def position_json(p: Position | None, symbol: str, mark: float, update_ms: int, *, v2: bool = False) -> Json:
    """One ``positionRisk`` row (v3 shape; ``v2=True`` adds ``leverage`` and ``marginType``).

    ``notional`` is signed (ccxt takes the side from its sign); a flat symbol has zeros.
    """
    amt = 0.0 if p is None else p.quantity * p.side.sign
    row: Json = {
        "symbol": symbol,
        "positionSide": "BOTH",
        "positionAmt": fmt(amt),
        "entryPrice": fmt(p.entry_price) if p else "0",
        "breakEvenPrice": fmt(p.entry_price) if p else "0",
        "markPrice": fmt(mark),
        "unRealizedProfit": fmt(p.unrealized_pnl) if p else "0",
        "liquidationPrice": fmt(p.liquidation_price) if p else "0",
        "isolatedMargin": fmt(p.isolated_margin + p.unrealized_pnl) if p else "0",
        "notional": fmt(amt * mark),
        "marginAsset": ASSET,
        "isolatedWallet": fmt(p.isolated_margin) if p else "0",
        "initialMargin": fmt(abs(amt) * mark / p.leverage) if p else "0",
        "maintMargin": "0",
        "positionInitialMargin": fmt(abs(amt) * mark / p.leverage) if p else "0",
        "openOrderInitialMargin": "0",
        "adl": 0,
        "bidNotional": "0",
        "askNotional": "0",
        "updateTime": update_ms,
    }
    if v2:
        row["leverage"] = str(p.leverage if p else 1)
        row["marginType"] = "isolated" if p and p.isolated_margin else "cross"
    return row


def position_from_json(d: Mapping[str, Any], leverage: int | None = None) -> Position | None:
    """A ``positionRisk`` row as a ``Position`` (None when flat). v3 has no ``leverage``: pass it."""
    amt = num(d["positionAmt"])
    if amt == 0.0:
        return None
    return Position(
        symbol=str(d["symbol"]),
        side=Side.LONG if amt > 0 else Side.SHORT,
        quantity=abs(amt),
        entry_price=num(d["entryPrice"]),
        leverage=int(d.get("leverage", leverage or 1)),
        isolated_margin=num(d.get("isolatedWallet")),
        unrealized_pnl=num(d.get("unRealizedProfit")),
        liquidation_price=num(d.get("liquidationPrice")),
    )


# ---------------------------------------------------------------------------------------- events


def event_json(ev: ExchangeEvent) -> Json:
    """A user-data-stream event as Binance sends it (``ORDER_TRADE_UPDATE`` / ``ALGO_UPDATE`` /
    ``ACCOUNT_UPDATE``)."""
    if isinstance(ev, OrderTradeUpdate):
        return _otu_json(ev)
    if isinstance(ev, AlgoUpdate):
        return _algo_update_json(ev)
    return _account_update_json(ev)


def _otu_json(e: OrderTradeUpdate) -> Json:
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": e.event_time_ms,
        "T": e.trade_time_ms,
        "o": {
            "s": e.symbol,
            "c": e.client_order_id,
            "S": e.side.value,
            "o": e.order_type.value,
            "f": "GTC",
            "q": fmt(e.quantity),
            "p": "0",
            "ap": fmt(e.avg_price),
            "sp": "0",
            "x": e.execution_type,
            "X": e.status.value,
            "i": e.order_id,
            "l": fmt(e.last_filled_qty),
            "z": fmt(e.cumulative_filled_qty),
            "L": fmt(e.last_filled_price),
            "N": ASSET,
            "n": fmt(e.commission),
            "T": e.trade_time_ms,
            "t": e.trade_id,
            "b": "0",
            "a": "0",
            "m": False,
            "R": e.reduce_only,
            "wt": "CONTRACT_PRICE",
            "ot": e.original_type.value,
            "ps": "BOTH",
            "cp": False,
            "rp": fmt(e.realized_pnl),
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "EXPIRE_MAKER",
            "pm": "NONE",
            "gtd": 0,
        },
    }


def _algo_update_json(e: AlgoUpdate) -> Json:
    return {
        "e": "ALGO_UPDATE",
        "T": e.event_time_ms,
        "E": e.event_time_ms,
        "o": {
            "caid": e.client_algo_id,
            "aid": e.algo_id,
            "at": "CONDITIONAL",
            "o": e.order_type.value,
            "s": e.symbol,
            "S": e.side.value,
            "ps": "BOTH",
            "f": "GTC",
            "q": fmt(e.quantity),
            "X": e.status.value,
            "ai": str(e.triggered_order_id) if e.triggered_order_id else "",
            "ap": "0",
            "aq": "0",
            "act": "0",
            "tp": fmt(e.trigger_price),
            "p": "0",
            "V": "EXPIRE_MAKER",
            "wt": "CONTRACT_PRICE",
            "pm": "NONE",
            "cp": False,
            "pP": False,
            "R": e.reduce_only,
            "tt": 0,
            "gtd": 0,
            "rm": "",
        },
    }


def _account_update_json(e: AccountUpdate) -> Json:
    return {
        "e": "ACCOUNT_UPDATE",
        "E": e.event_time_ms,
        "T": e.event_time_ms,
        "a": {
            "m": e.reason,
            "B": [
                {
                    "a": b.asset,
                    "wb": fmt(b.wallet_balance),
                    "cw": fmt(b.cross_wallet_balance),
                    "bc": fmt(b.balance_change),
                }
                for b in e.balances
            ],
            "P": [
                {
                    "s": p.symbol,
                    "pa": fmt(p.position_amount),
                    "ep": fmt(p.entry_price),
                    "bep": fmt(p.entry_price),
                    "cr": "0",
                    "up": fmt(p.unrealized_pnl),
                    "mt": p.margin_type,
                    "iw": fmt(p.isolated_wallet),
                    "ps": "BOTH",
                }
                for p in e.positions
            ],
        },
    }


def event_from_json(d: Mapping[str, Any]) -> ExchangeEvent | None:
    """A user-stream message as a domain event; None for kinds the bot does not consume
    (``listenKeyExpired``, ``TRADE_LITE``, ``MARGIN_CALL``, ...)."""
    kind = d.get("e")
    if kind == "ORDER_TRADE_UPDATE":
        o = d["o"]
        return OrderTradeUpdate(
            event_time_ms=int(d["E"]),
            symbol=str(o["s"]),
            order_id=int(o["i"]),
            client_order_id=str(o["c"]),
            side=OrderSide(o["S"]),
            order_type=OrderType(o["o"]),
            original_type=OrderType(o.get("ot", o["o"])),
            execution_type=str(o["x"]),
            status=OrderStatus(o["X"]),
            reduce_only=bool(o.get("R", False)),
            quantity=num(o["q"]),
            last_filled_qty=num(o.get("l")),
            cumulative_filled_qty=num(o.get("z")),
            last_filled_price=num(o.get("L")),
            avg_price=num(o.get("ap")),
            commission=num(o.get("n")),
            realized_pnl=num(o.get("rp")),
            trade_id=int(o.get("t", 0)),
            trade_time_ms=int(o.get("T", d.get("T", 0))),
        )
    if kind == "ALGO_UPDATE":
        o = d["o"]
        ai = o.get("ai") or 0
        return AlgoUpdate(
            event_time_ms=int(d["E"]),
            symbol=str(o["s"]),
            algo_id=int(o["aid"]),
            client_algo_id=str(o["caid"]),
            side=OrderSide(o["S"]),
            order_type=OrderType(o["o"]),
            status=AlgoStatus(o["X"]),
            quantity=num(o["q"]),
            trigger_price=num(o["tp"]),
            reduce_only=bool(o.get("R", False)),
            triggered_order_id=int(ai),
        )
    if kind == "ACCOUNT_UPDATE":
        a = d["a"]
        return AccountUpdate(
            event_time_ms=int(d["E"]),
            reason=str(a["m"]),
            balances=tuple(
                BalanceChange(str(b["a"]), num(b["wb"]), num(b["cw"]), num(b.get("bc")))
                for b in a.get("B", [])
            ),
            positions=tuple(
                PositionChange(
                    str(p["s"]), num(p["pa"]), num(p["ep"]), num(p["up"]), str(p["mt"]), num(p["iw"])
                )
                for p in a.get("P", [])
            ),
        )
    return None


# ---------------------------------------------------------------------------------------- klines


def kline_row(open_ms: int, o: float, h: float, lo: float, c: float, v: float, bar_ms: int) -> list[Any]:
    """One ``GET /fapi/v1/klines`` array: ``[openTime, o, h, l, c, v, closeTime, quoteVolume,
    trades, takerBuyBase, takerBuyQuote, "0"]``. Quote volume is estimated at the bar's mean price
    (recorded files carry base volume only); taker and trade-count fields are not recorded: 0."""
    return [
        open_ms,
        fmt(o),
        fmt(h),
        fmt(lo),
        fmt(c),
        fmt(v),
        open_ms + bar_ms - 1,
        fmt(round(v * (o + h + lo + c) / 4.0, 8)),
        0,
        "0",
        "0",
        "0",
    ]


def kline_event(
    symbol: str,
    interval: str,
    event_ms: int,
    open_ms: int,
    ohlcv: tuple[float, float, float, float, float],
    closed: bool,
    bar_ms: int,
) -> Json:
    """A ``<symbol>@kline_<interval>`` market-stream event; ``k.x`` is true only when closed."""
    o, h, lo, c, v = ohlcv
    return {
        "e": "kline",
        "E": event_ms,
        "s": symbol,
        "k": {
            "t": open_ms,
            "T": open_ms + bar_ms - 1,
            "s": symbol,
            "i": interval,
            "f": 0,
            "L": 0,
            "o": fmt(o),
            "c": fmt(c),
            "h": fmt(h),
            "l": fmt(lo),
            "v": fmt(v),
            "n": 0,
            "x": closed,
            "q": fmt(round(v * (o + h + lo + c) / 4.0, 8)),
            "V": "0",
            "Q": "0",
            "B": "0",
        },
    }
