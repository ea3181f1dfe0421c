"""Account shapes: trades (``userTrades``), income rows (``income``) and positions
(``positionRisk``), each writer beside its reader.

Separate because these are the account's REST reads (what reconciliation and the booking of an
unbooked round trip rely on), as opposed to the orders the bot places and the stream it follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perpbot.domain.types import (
    Fill,
    Income,
    OrderSide,
    Position,
    Side,
)
from perpbot.exchange.binance.codec.decimals import ASSET, Json, fmt, num


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
