"""User-data-stream shapes: ``ORDER_TRADE_UPDATE``, ``ALGO_UPDATE`` and ``ACCOUNT_UPDATE``,
written from the domain events (``event_json``) and read back into them (``event_from_json``).

Separate because the stream uses Binance's one-letter keys, a vocabulary of its own, and because
the live user stream and the simulator's private WebSocket need nothing else from the codec.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    OrderSide,
)
from perpbot.exchange.binance.codec.decimals import ASSET, Json, fmt, num
from perpbot.exchange.binance.codec.orders import order_status, order_type


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
            order_type=order_type(o["o"]),
            original_type=order_type(o.get("ot", o["o"])),
            execution_type=str(o["x"]),
            status=order_status(o["X"]),
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
            order_type=order_type(o["o"]),
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
