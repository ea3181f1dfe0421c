"""The simulator's own record of what a bot did to the account (``GET /sim/audit``).

Why on the simulator's side: a bot that is killed and restarted cannot be trusted to report its
own gaps, and the invariants of the chaos test (issue 10 §4) are about the *exchange*: was every
position covered by a reduce-only stop and take-profit for its full quantity, which executions
happened, which client ids opened positions. The audit watches the venue after every engine
operation and after every candle, in replay time, and keeps:

- protection gaps: per symbol, the replay-time span during which a position was open without a
  reduce-only STOP_MARKET *and* TAKE_PROFIT_MARKET on the closing side, each for at least the
  position's quantity (replay time only moves when a candle happens, so a position left bare
  across a candle is a 15-minute gap; one covered before the next candle is a 0 ms gap);
- every execution (fill) with the order's client id and reduce-only flag, and every income row.

Nothing here changes what the venue does; it only reads the engine after each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perpbot.domain.types import OrderSide, OrderType, Side
from perpbot.exchange.binance.codec.decimals import fmt
from perpbot.simulator.venue import Venue

QTY_TOL = 1e-9


@dataclass(slots=True)
class Gap:
    """A position open without full protection from ``start_ms`` to ``end_ms`` (replay time)."""

    symbol: str
    side: str
    quantity: float
    start_ms: int
    end_ms: int | None = None
    covered_by: tuple[str, ...] = ()  # what did cover it when last seen bare

    def duration_ms(self, now_ms: int) -> int:
        return (self.end_ms if self.end_ms is not None else now_ms) - self.start_ms

    def as_json(self, now_ms: int) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "side": self.side,
            "quantity": self.quantity,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "duration_ms": self.duration_ms(now_ms),
            "covered_by": list(self.covered_by),
        }


@dataclass
class ProtectionAudit:
    """Watches ``venue`` (``observe`` after each engine step and each candle)."""

    venue: Venue
    gaps: list[Gap] = field(default_factory=list)
    _open: dict[str, Gap] = field(default_factory=dict)
    observations: int = 0

    def observe(self) -> None:
        self.observations += 1
        v = self.venue
        now = v.now_ms
        for s in v.market.symbols:
            pos = v.engine.position(s)
            gap = self._open.get(s)
            if pos is None or pos.quantity <= QTY_TOL:
                if gap is not None:
                    gap.end_ms = now
                    del self._open[s]
                continue
            kinds = self._cover(s, pos.side, pos.quantity)
            full = {"STOP_MARKET", "TAKE_PROFIT_MARKET"} <= set(kinds)
            if full:
                if gap is not None:
                    gap.end_ms = now
                    del self._open[s]
            elif gap is None or gap.side != pos.side.value:
                if gap is not None:
                    gap.end_ms = now
                new = Gap(s, pos.side.value, pos.quantity, now, covered_by=tuple(sorted(kinds)))
                self._open[s] = new
                self.gaps.append(new)
            else:
                gap.quantity = max(gap.quantity, pos.quantity)
                gap.covered_by = tuple(sorted(kinds))

    def _cover(self, symbol: str, side: Side, qty: float) -> list[str]:
        """Kinds of reduce-only conditional orders on the closing side covering ``qty``."""
        closing = OrderSide.SELL if side is Side.LONG else OrderSide.BUY
        out = []
        for o in self.venue.engine.open_algo_orders(symbol):
            if not o.reduce_only or o.side is not closing or o.quantity < qty - QTY_TOL:
                continue
            if o.type in (OrderType.STOP_MARKET, OrderType.TAKE_PROFIT_MARKET):
                out.append(o.type.value)
        return out

    def report(self) -> dict[str, Any]:
        v = self.venue
        now = v.now_ms
        fills = []
        for f in v.engine.fills():
            rec = v.orders.get(f.order_id)
            fills.append(
                {
                    "symbol": f.symbol,
                    "order_id": f.order_id,
                    "trade_id": f.trade_id,
                    "client_id": rec.order.client_order_id if rec else "",
                    "reduce_only": bool(rec.order.reduce_only) if rec else False,
                    "side": f.side.value,
                    "price": fmt(f.price),
                    "quantity": fmt(f.quantity),
                    "commission": fmt(f.commission),
                    "realized_pnl": fmt(f.realized_pnl),
                    "time_ms": f.time_ms,
                }
            )
        income = [
            {
                "symbol": r.symbol,
                "type": r.income_type,
                "income": fmt(r.income),
                "time_ms": r.time_ms,
                "trade_id": r.trade_id,
            }
            for r in v.engine.income_history()
        ]
        return {
            "replay_time_ms": now,
            "observations": self.observations,
            "gaps": [g.as_json(now) for g in self.gaps],
            "fills": fills,
            "income": income,
            "balance": fmt(v.engine.balance()),
            "positions": {
                s: {"side": p.side.value, "quantity": p.quantity}
                for s in v.market.symbols
                if (p := v.engine.position(s)) is not None
            },
        }
