"""Public market-data routes: exchangeInfo, time, ping, klines, premiumIndex, fundingRate,
openInterest, openInterestHist. Market data never reaches past the replay time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from perpbot.data.schema import BAR_MS
from perpbot.exchange.binance.codec.decimals import fmt
from perpbot.exchange.binance.codec.market import kline_row, symbol_info
from perpbot.exchange.sim.settings import FUNDING_INTERVAL_MS
from perpbot.simulator.errors import BinanceError
from perpbot.simulator.params import Params
from perpbot.simulator.weights import WEIGHT_LIMIT

if TYPE_CHECKING:
    from perpbot.simulator.server import SimServer

PERIODS_MS = {
    "15m": BAR_MS,
    "30m": 2 * BAR_MS,
    "1h": 4 * BAR_MS,
    "2h": 8 * BAR_MS,
    "4h": 16 * BAR_MS,
    "6h": 24 * BAR_MS,
    "12h": 48 * BAR_MS,
    "1d": 96 * BAR_MS,
}
OI_RETAINED_MS = 30 * 86_400_000  # openInterestHist: "only the data of the latest 30 days"
ALL_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")


def exchange_info(srv: SimServer, p: Params) -> Any:
    symbols = []
    for s in srv.venue.market.symbols:
        f = srv.venue.engine.symbol_filters(s)
        base = s[: -len("USDT")] if s.endswith("USDT") else s
        symbols.append(symbol_info(f, base, onboard_ms=int(srv.venue.market.series[s].open_time[0])))
    return {
        "timezone": "UTC",
        "serverTime": srv.server_ms(),
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": srv.cfg.weight_limit or WEIGHT_LIMIT,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": symbols,
    }


def server_time(srv: SimServer, p: Params) -> Any:
    return {"serverTime": srv.server_ms()}


def ping(srv: SimServer, p: Params) -> Any:
    return {}


def _window(
    srv: SimServer, p: Params, symbol: str, default: int, cap: int, oldest_ms: int | None = None
) -> tuple[Any, int, int]:
    """Indices [lo, hi) of closed bars of ``symbol`` within startTime/endTime, limited like Binance
    (from startTime forward when given, else the most recent ``limit``); bars opening before
    ``oldest_ms`` (a retention limit) are never served."""
    series = srv.venue.market.series[symbol]
    limit = p.int("limit", default, lo=1, hi=cap)
    last = srv.venue.last_index(symbol)
    start, end = p.opt_int("startTime"), p.opt_int("endTime")
    floor = 0 if oldest_ms is None else int(np.searchsorted(series.open_time, oldest_ms))
    hi = last + 1
    if end is not None:
        hi = min(hi, int(np.searchsorted(series.open_time, end, side="right")))
    if start is not None:
        lo = max(floor, int(np.searchsorted(series.open_time, start)))
        hi = min(hi, lo + limit)
    else:
        lo = max(floor, hi - limit)
    return series, lo, max(lo, hi)


def klines(srv: SimServer, p: Params) -> Any:
    symbol = srv.venue.symbol(p.req("symbol"))
    interval = p.req("interval")
    if interval not in ALL_INTERVALS:
        raise BinanceError(-1120, "Invalid interval.")
    if interval != "15m":
        raise BinanceError(
            -1120, f"Invalid interval: this simulator serves 15m candles only, got {interval}."
        )
    s, lo, hi = _window(srv, p, symbol, 500, 1500)
    return [
        kline_row(
            int(s.open_time[i]),
            float(s.open[i]),
            float(s.high[i]),
            float(s.low[i]),
            float(s.close[i]),
            float(s.volume[i]),
            BAR_MS,
        )
        for i in range(lo, hi)
    ]


def mark_price_klines(srv: SimServer, p: Params) -> Any:
    """``markPriceKlines``: the engine marks positions at the trade price (see the engine's model),
    so mark candles are the trade candles without volume, as Binance sends them."""
    rows = klines(srv, p)
    for r in rows:
        r[5], r[7], r[9], r[10] = "0", "0", "0", "0"
    return rows


def _premium(srv: SimServer, symbol: str) -> dict[str, Any]:
    v = srv.venue
    s = v.market.series[symbol]
    i = max(0, v.last_index(symbol))
    now = v.now_ms
    mark = v.mark(symbol)
    return {
        "symbol": symbol,
        "markPrice": fmt(mark),
        "indexPrice": fmt(mark),
        "estimatedSettlePrice": fmt(mark),
        "lastFundingRate": fmt(float(s.funding[i])),
        "interestRate": "0.0001",
        "nextFundingTime": (now // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS,
        "time": now,
    }


def premium_index(srv: SimServer, p: Params) -> Any:
    sym = p.get("symbol")
    if sym is None:
        return [_premium(srv, s) for s in srv.venue.market.symbols]
    return _premium(srv, srv.venue.symbol(sym))


def funding_rate(srv: SimServer, p: Params) -> Any:
    symbol = srv.venue.symbol(p.req("symbol"))
    s = srv.venue.market.series[symbol]
    times = s.open_time[: srv.venue.last_index(symbol) + 1]
    start, end = p.opt_int("startTime"), p.opt_int("endTime")
    limit = p.int("limit", 100, lo=1, hi=1000)
    mask = times % FUNDING_INTERVAL_MS == 0
    if start is not None:
        mask &= times >= start
    if end is not None:
        mask &= times <= end
    rows = np.flatnonzero(mask)
    rows = rows[:limit] if start is not None else rows[-limit:]
    return [
        {
            "symbol": symbol,
            "fundingTime": int(s.open_time[i]),
            "fundingRate": fmt(float(s.settled[i])),
            "markPrice": fmt(float(s.open[i])),
        }
        for i in rows
    ]


def open_interest(srv: SimServer, p: Params) -> Any:
    symbol = srv.venue.symbol(p.req("symbol"))
    s = srv.venue.market.series[symbol]
    i = max(0, srv.venue.last_index(symbol))
    return {"openInterest": fmt(round(float(s.oi_level[i]), 3)), "symbol": symbol, "time": srv.venue.now_ms}


def open_interest_hist(srv: SimServer, p: Params) -> Any:
    symbol = srv.venue.symbol(p.req("symbol"))
    period = p.req("period")
    if period not in PERIODS_MS:
        raise BinanceError(
            -1130, f"Data sent for parameter 'period' is not valid (served: {', '.join(PERIODS_MS)})."
        )
    step = PERIODS_MS[period] // BAR_MS
    # Binance keeps only the last 30 days: the oldest snapshot is 30 days before now.
    oldest_open = srv.venue.now_ms - OI_RETAINED_MS - BAR_MS
    s, lo, hi = _window(srv, p, symbol, 30 * step, 500 * step, oldest_ms=oldest_open)
    idx = [i for i in range(lo, hi) if (int(s.open_time[i]) // BAR_MS) % step == 0]
    return [
        {
            "symbol": symbol,
            "sumOpenInterest": fmt(round(float(s.oi_level[i]), 3)),
            "sumOpenInterestValue": fmt(round(float(s.oi_level[i] * s.close[i]), 3)),
            "timestamp": int(s.open_time[i]) + BAR_MS,
        }
        for i in idx
    ]
