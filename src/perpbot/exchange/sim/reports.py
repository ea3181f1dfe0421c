"""The user-data events the simulated exchange emits, built in Binance's shapes.

Event sequences (what a bot may rely on)
----------------------------------------
Market order (entry or reduce-only close), per order::

    ORDER_TRADE_UPDATE x=NEW   X=NEW   o=MARKET ot=MARKET  (new order id)
    ORDER_TRADE_UPDATE x=TRADE X=FILLED  (or PARTIALLY_FILLED … FILLED, same order id, when
                                          max_fill_qty_per_execution splits the fill)
    ACCOUNT_UPDATE m=ORDER               (after every TRADE execution)

Triggered conditional order::

    ALGO_UPDATE X=TRIGGERED  triggered_order_id=N
    ORDER_TRADE_UPDATE x=NEW   X=NEW  order id N, o=MARKET, ot=MARKET (or the conditional type
                                      with report_original_type=True), R=true
    ORDER_TRADE_UPDATE x=TRADE X=FILLED (or PARTIALLY_FILLED … FILLED)  + ACCOUNT_UPDATE m=ORDER
    ALGO_UPDATE X=FINISHED   triggered_order_id=N

Every triggered/market fill stamps ``event_time_ms == trade_time_ms == now_ms``. A reduce-only
order larger than the position executes the position size and reports FILLED (``q`` keeps the
requested quantity; ``z`` is what executed). Triggered orders carry the algo's client id.

Liquidation: ``ORDER_TRADE_UPDATE x=CALCULATED X=FILLED o=LIQUIDATION`` (client id
``autoclose-…``), ``ACCOUNT_UPDATE m=ORDER``, then ``ACCOUNT_UPDATE m=INSURANCE_CLEAR`` when a
clearance fee is taken. Algo placement/cancel: ``ALGO_UPDATE`` NEW / CANCELED.

Separate from the clearing because the shapes are the contract with every consumer (the bot's
adapter, the protocol simulator's codec) and read best in one place; these functions only build
events, they decide nothing.
"""

from __future__ import annotations

from perpbot.domain.events import AccountUpdate, AlgoUpdate, BalanceChange, OrderTradeUpdate, PositionChange
from perpbot.domain.types import AlgoStatus, ConditionalOrder, OrderSide, OrderStatus, OrderType
from perpbot.exchange.sim.book import Algo, Book
from perpbot.exchange.sim.registry import LiveOrder

ASSET = "USDT"


def order_report(
    o: LiveOrder, x: str, q: float, price: float, fee: float, rp: float, tid: int, now: int
) -> OrderTradeUpdate:
    """ORDER_TRADE_UPDATE of execution type ``x`` for ``o`` (stamps ``o.update_time_ms``)."""
    o.update_time_ms = now
    return OrderTradeUpdate(
        event_time_ms=now,
        symbol=o.symbol,
        order_id=o.order_id,
        client_order_id=o.client_order_id,
        side=o.side,
        order_type=o.type,
        original_type=o.original_type,
        execution_type=x,
        status=o.status,
        reduce_only=o.reduce_only,
        quantity=o.quantity,
        last_filled_qty=q,
        cumulative_filled_qty=o.executed,
        last_filled_price=price,
        avg_price=o.avg_price if o.executed > 0.0 else 0.0,
        commission=fee,
        realized_pnl=rp,
        trade_id=tid,
        trade_time_ms=now,
    )


def liquidation_report(
    symbol: str, oid: int, side: OrderSide, q: float, lp: float, rp: float, tid: int, now: int
) -> OrderTradeUpdate:
    """ORDER_TRADE_UPDATE x=CALCULATED X=FILLED o=LIQUIDATION of a whole position at ``lp``."""
    return OrderTradeUpdate(
        event_time_ms=now,
        symbol=symbol,
        order_id=oid,
        client_order_id=f"autoclose-{oid}",
        side=side,
        order_type=OrderType.LIQUIDATION,
        original_type=OrderType.LIQUIDATION,
        execution_type="CALCULATED",
        status=OrderStatus.FILLED,
        reduce_only=True,
        quantity=q,
        last_filled_qty=q,
        cumulative_filled_qty=q,
        last_filled_price=lp,
        avg_price=lp,
        commission=0.0,
        realized_pnl=rp,
        trade_id=tid,
        trade_time_ms=now,
    )


def account_update(
    reason: str, b: Book, mark: float, wallet: float, cross: float, bc: float, now: int
) -> AccountUpdate:
    """ACCOUNT_UPDATE m=``reason`` with the wallet and ``b``'s position (uPnL at ``mark``)."""
    return AccountUpdate(
        event_time_ms=now,
        reason=reason,
        balances=(BalanceChange(ASSET, wallet, cross, bc),),
        positions=(
            PositionChange(
                b.symbol,
                b.qty,
                b.entry,
                (mark - b.entry) * b.qty if b.qty else 0.0,
                "isolated" if b.margin_type == "ISOLATED" else "cross",
                b.iw,
            ),
        ),
    )


def algo_update(symbol: str, a: Algo, status: AlgoStatus, triggered_order_id: int, now: int) -> AlgoUpdate:
    return AlgoUpdate(
        now,
        symbol,
        a.algo_id,
        a.client_algo_id,
        a.side,
        a.type,
        status,
        a.quantity,
        a.trigger,
        a.reduce_only,
        triggered_order_id,
    )


def conditional(symbol: str, a: Algo, status: AlgoStatus, triggered_order_id: int = 0) -> ConditionalOrder:
    """The REST view of a resting algo order."""
    return ConditionalOrder(
        symbol,
        a.algo_id,
        a.side,
        a.type,
        a.quantity,
        a.trigger,
        status,
        a.reduce_only,
        a.client_algo_id,
        a.time_ms,
        triggered_order_id,
    )
