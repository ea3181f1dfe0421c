"""Market shapes: one ``exchangeInfo`` symbol (and the filters read back from it) and klines,
as ``GET /fapi/v1/klines`` rows and ``<symbol>@kline_<interval>`` stream events.

Separate from the account shapes because these are public, unsigned data: the simulator's
market routes and the live market-data client use them, and never an account field.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from perpbot.domain.types import (
    SymbolFilters,
)
from perpbot.exchange.binance.codec.decimals import ASSET, Json, fmt, num

MAX_NUM_ALGO_ORDERS = 10  # open conditional orders per symbol (Binance: -4045 beyond it)


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
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": MAX_NUM_ALGO_ORDERS},
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
