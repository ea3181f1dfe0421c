"""Account routes: account, balance, positionRisk, leverageBracket, positionSide/dual,
multiAssetsMargin, leverage, marginType, income, userTrades, and the listen-key endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from perpbot.exchange.binance.codec.account import income_json, position_json, trade_json
from perpbot.exchange.binance.codec.decimals import fmt
from perpbot.simulator.errors import BinanceError
from perpbot.simulator.params import Params
from perpbot.simulator.venue import tran_id

if TYPE_CHECKING:
    from perpbot.simulator.server import SimServer

DAY_MS = 86_400_000


def _totals(srv: SimServer) -> dict[str, float]:
    e = srv.venue.engine
    upnl = sum(pos.unrealized_pnl for s in srv.venue.market.symbols if (pos := e.position(s)) is not None)
    wallet = e.balance()
    avail = e.available_balance()
    return {"wallet": wallet, "upnl": upnl, "avail": avail, "im": wallet - avail}


def account(srv: SimServer, p: Params) -> Any:
    t = _totals(srv)
    now = srv.venue.now_ms
    e = srv.venue.engine
    positions = []
    for s in srv.venue.market.symbols:
        pos = e.position(s)
        if pos is None:
            continue
        row = position_json(pos, s, srv.venue.mark(s), now)
        positions.append(
            {
                "symbol": s,
                "positionSide": "BOTH",
                "positionAmt": row["positionAmt"],
                "unrealizedProfit": row["unRealizedProfit"],
                "isolatedMargin": row["isolatedMargin"],
                "notional": row["notional"],
                "isolatedWallet": row["isolatedWallet"],
                "initialMargin": row["initialMargin"],
                "maintMargin": row["maintMargin"],
                "updateTime": now,
            }
        )
    asset = {
        "asset": "USDT",
        "walletBalance": fmt(t["wallet"]),
        "unrealizedProfit": fmt(t["upnl"]),
        "marginBalance": fmt(t["wallet"] + t["upnl"]),
        "maintMargin": "0",
        "initialMargin": fmt(t["im"]),
        "positionInitialMargin": fmt(t["im"]),
        "openOrderInitialMargin": "0",
        "crossWalletBalance": fmt(t["avail"]),
        "crossUnPnl": "0",
        "availableBalance": fmt(t["avail"]),
        "maxWithdrawAmount": fmt(t["avail"]),
        "updateTime": now,
    }
    return {
        "totalInitialMargin": fmt(t["im"]),
        "totalMaintMargin": "0",
        "totalWalletBalance": fmt(t["wallet"]),
        "totalUnrealizedProfit": fmt(t["upnl"]),
        "totalMarginBalance": fmt(t["wallet"] + t["upnl"]),
        "totalPositionInitialMargin": fmt(t["im"]),
        "totalOpenOrderInitialMargin": "0",
        "totalCrossWalletBalance": fmt(t["avail"]),
        "totalCrossUnPnl": "0",
        "availableBalance": fmt(t["avail"]),
        "maxWithdrawAmount": fmt(t["avail"]),
        "assets": [asset],
        "positions": positions,
    }


def balance(srv: SimServer, p: Params) -> Any:
    t = _totals(srv)
    return [
        {
            "accountAlias": "SimAccount",
            "asset": "USDT",
            "balance": fmt(t["wallet"]),
            "crossWalletBalance": fmt(t["avail"]),
            "crossUnPnl": "0",
            "availableBalance": fmt(t["avail"]),
            "maxWithdrawAmount": fmt(t["avail"]),
            "marginAvailable": True,
            "updateTime": srv.venue.now_ms,
        }
    ]


def position_risk_v3(srv: SimServer, p: Params) -> Any:
    """v3: rows only for symbols with a position (or open orders), as Binance does."""
    return _position_rows(srv, p, v2=False)


def position_risk_v2(srv: SimServer, p: Params) -> Any:
    return _position_rows(srv, p, v2=True)


def _position_rows(srv: SimServer, p: Params, v2: bool) -> Any:
    v = srv.venue
    sym = p.get("symbol")
    symbols = [v.symbol(sym)] if sym else v.market.symbols
    rows = []
    for s in symbols:
        pos = v.engine.position(s)
        if pos is None and not v2 and not v.open_algos(s):
            continue
        row = position_json(pos, s, v.mark(s), v.now_ms, v2=v2)
        if v2:
            row["leverage"] = str(v.engine.leverage(s))
            row["marginType"] = "isolated" if v.engine.margin_type(s) == "ISOLATED" else "cross"
        rows.append(row)
    return rows


def leverage_bracket(srv: SimServer, p: Params) -> Any:
    mmr = srv.venue.engine.settings.maintenance_margin_rate

    def one(s: str) -> dict[str, Any]:
        return {
            "symbol": s,
            "notionalCoef": 1.0,
            "brackets": [
                {
                    "bracket": 1,
                    "initialLeverage": 125,
                    "notionalCap": 1_000_000_000,
                    "notionalFloor": 0,
                    "maintMarginRatio": mmr,
                    "cum": 0.0,
                }
            ],
        }

    sym = p.get("symbol")
    if sym:
        return [one(srv.venue.symbol(sym))]
    return [one(s) for s in srv.venue.market.symbols]


def get_dual(srv: SimServer, p: Params) -> Any:
    return {"dualSidePosition": False}


def get_multi_assets(srv: SimServer, p: Params) -> Any:
    """Single-asset margin only (what perpbot's start-up check requires; USDT is the one asset)."""
    return {"multiAssetsMargin": False}


def post_dual(srv: SimServer, p: Params) -> Any:
    want = p.bool("dualSidePosition") if p.get("dualSidePosition") else None
    if want is None:
        raise BinanceError(
            -1102, "Mandatory parameter 'dualSidePosition' was not sent, was empty/null, or malformed."
        )
    if not want:
        raise BinanceError(-4059, "No need to change position side.")
    v = srv.venue
    if any(v.engine.position(s) is not None for s in v.market.symbols):
        raise BinanceError(-4068, "Position side cannot be changed if there exists position.")
    if v.open_algos(None):
        raise BinanceError(-4067, "Position side cannot be changed if there exists open orders.")
    raise BinanceError(
        -1000, "This simulator emulates one-way mode only (dualSidePosition=true is not served)."
    )


def set_leverage(srv: SimServer, p: Params) -> Any:
    """A change is pushed on the user stream as ``ACCOUNT_CONFIG_UPDATE``, as Binance does."""
    s = srv.venue.symbol(p.req("symbol"))
    lev = p.int("leverage")
    was = srv.venue.engine.leverage(s)
    srv.venue.call(srv.venue.engine.set_leverage, s, lev)
    if lev != was:
        now = srv.venue.now_ms
        srv.private_hub.push_raw({"e": "ACCOUNT_CONFIG_UPDATE", "E": now, "T": now, "ac": {"s": s, "l": lev}})
    return {"leverage": lev, "maxNotionalValue": fmt(1_000_000_000 / lev), "symbol": s}


def set_margin_type(srv: SimServer, p: Params) -> Any:
    s = srv.venue.symbol(p.req("symbol"))
    mt = p.req("marginType").upper()
    if mt not in ("ISOLATED", "CROSSED"):
        raise BinanceError(-4044, "The margin type is invalid.")
    srv.venue.call(srv.venue.engine.set_margin_type, s, mt)
    return {"code": 200, "msg": "success"}


def income(srv: SimServer, p: Params) -> Any:
    v = srv.venue
    sym = p.get("symbol")
    symbol = v.symbol(sym) if sym else None
    types = (p.req("incomeType"),) if p.get("incomeType") else ()
    start, end = p.opt_int("startTime"), p.opt_int("endTime")
    limit = p.int("limit", 100, lo=1, hi=1000)
    page = p.int("page", 1, lo=1)
    if start is None and end is None:
        start = v.now_ms - 7 * DAY_MS  # Binance: the recent 7 days when no window is sent
    rows = srv.incomes(symbol, start, end, types)
    rows = rows[(page - 1) * limit : page * limit]
    return [income_json(r, tran_id(r)) for r in rows]


def user_trades(srv: SimServer, p: Params) -> Any:
    v = srv.venue
    symbol = v.symbol(p.req("symbol"))
    limit = p.int("limit", 500, lo=1, hi=1000)
    start, end, from_id = p.opt_int("startTime"), p.opt_int("endTime"), p.opt_int("fromId")
    if start is not None and end is not None and end - start > 7 * DAY_MS:
        raise BinanceError(-4181, "The time between startTime and endTime can not exceed 7 days.")
    fills = v.engine.fills(symbol)
    if from_id is not None:
        fills = [f for f in fills if f.trade_id >= from_id][:limit]
    elif start is not None or end is not None:
        fills = [
            f for f in fills if (start is None or f.time_ms >= start) and (end is None or f.time_ms <= end)
        ]
        fills = fills[:limit] if start is not None else fills[-limit:]
    else:
        fills = fills[-limit:]
    return [trade_json(f) for f in fills]


def listen_key_post(srv: SimServer, p: Params) -> Any:
    return {"listenKey": srv.listen_keys.create()}


def listen_key_put(srv: SimServer, p: Params) -> Any:
    return {"listenKey": srv.listen_keys.extend()}


def listen_key_delete(srv: SimServer, p: Params) -> Any:
    srv.listen_keys.expire(close=True)
    return {}
