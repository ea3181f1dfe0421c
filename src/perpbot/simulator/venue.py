"""The simulated account behind the protocol: ``MatchingEngine`` + order records + event fan-out.

The engine is the only place where orders match (the backtest uses the same class); this module
adds what a *server* must remember and the engine need not: every order ever placed (Binance
answers ``GET /order`` for filled orders too), the algo book's history, client-id lookups, and the
user-data-stream listeners. Records are built from the engine's own events, so what REST reports
and what the stream sent cannot disagree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np

from perpbot.domain.events import AlgoUpdate, ExchangeEvent, OrderTradeUpdate
from perpbot.domain.types import (
    AlgoStatus,
    ConditionalOrder,
    Income,
    Order,
    OrderResult,
    OrderSide,
    OrderStatus,
    OrderType,
)
from perpbot.errors import ConfigError
from perpbot.exchange.binance.codec.market import MAX_NUM_ALGO_ORDERS
from perpbot.exchange.errors import ExchangeError
from perpbot.exchange.known_filters import derived_filters
from perpbot.exchange.sim.engine import MatchingEngine
from perpbot.exchange.sim.settings import SimSettings
from perpbot.simulator.errors import BinanceError
from perpbot.simulator.market import Market

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
CLIENT_ID_RULE = r"^[\.A-Z\:/a-z0-9_-]{1,36}$"
EventListener = Callable[[ExchangeEvent], None]
T = TypeVar("T")


def check_client_id(name: str, value: str) -> None:
    """Binance's client-id rule: 1..36 characters of ``[.A-Z:/a-z0-9_-]``."""
    if not CLIENT_ID_RE.match(value):
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '{CLIENT_ID_RULE}'."
        )


@dataclass(slots=True)
class AlgoRecord:
    order: ConditionalOrder
    update_ms: int
    actual_order_id: int = 0


@dataclass(slots=True)
class OrderRecord:
    order: Order
    update_ms: int


@dataclass
class Venue:
    """One account on one engine. ``listeners`` receive every event in the engine's order."""

    market: Market
    engine: MatchingEngine
    offsets: dict[str, int]  # engine bar index = series index - offset
    orders: dict[int, OrderRecord] = field(default_factory=dict)
    algos: dict[int, AlgoRecord] = field(default_factory=dict)
    order_by_cid: dict[str, int] = field(default_factory=dict)
    algo_by_cid: dict[str, int] = field(default_factory=dict)
    listeners: list[EventListener] = field(default_factory=list)
    fill_count: int = 0

    @classmethod
    def create(cls, market: Market, settings: SimSettings) -> Venue:
        """Engine over each symbol's bars from the one before the replay start; that bar is
        processed at once, so the account starts between two candles like a running exchange."""
        filters = {s: derived_filters(s, float(np.nanmedian(x.close))) for s, x in market.series.items()}
        engine = MatchingEngine(settings, filters)
        offsets: dict[str, int] = {}
        for s, x in market.series.items():
            first = int(np.searchsorted(x.open_time, market.start_ms)) - 1
            if first < 0:
                raise ConfigError(f"{s}: no candle before the replay start; pick a later --from")
            offsets[s] = first
            engine.add_bars(
                s,
                x.open_time[first:],
                x.open[first:],
                x.high[first:],
                x.low[first:],
                x.close[first:],
                x.funding[first:],
            )
        for s in market.series:
            engine.process_bar(s, 0)
        engine.pop_events()
        return cls(market, engine, offsets)

    # ------------------------------------------------------------------ time and market

    @property
    def now_ms(self) -> int:
        """Replay time: close time of the last processed candle."""
        return self.engine.now_ms

    def symbol(self, symbol: str | None) -> str:
        if not symbol or symbol not in self.market.series:
            raise BinanceError(-1121, "Invalid symbol.")
        return symbol

    def last_index(self, symbol: str) -> int:
        """Series index of the last closed candle of ``symbol``."""
        return self.market.series[symbol].last_closed(self.now_ms)

    def mark(self, symbol: str) -> float:
        return self.engine.last_price(symbol)

    # ------------------------------------------------------------------ orders

    def market_order(
        self, symbol: str, side: OrderSide, qty: float, reduce_only: bool, cid: str, otype: OrderType
    ) -> tuple[OrderResult, Order]:
        result = self.call(
            self.engine.market_order,
            symbol,
            side,
            qty,
            reduce_only=reduce_only,
            client_order_id=cid,
            order_type=otype,
        )
        return result, self.orders[result.order_id].order

    def place_algo(
        self,
        symbol: str,
        otype: OrderType,
        side: OrderSide,
        qty: float,
        trigger: float,
        reduce_only: bool,
        cid: str,
    ) -> ConditionalOrder:
        if (
            cid
            and cid in self.algo_by_cid
            and self.algos[self.algo_by_cid[cid]].order.status is AlgoStatus.NEW
        ):
            raise BinanceError(-4116, "ClientOrderId is duplicated.")
        if len(self.open_algos(symbol)) >= MAX_NUM_ALGO_ORDERS:  # the symbol's published limit
            raise BinanceError(-4045, "Reach max stop order limit.")
        return self.call(
            self.engine.place_algo,
            symbol,
            otype,
            side,
            qty,
            trigger,
            reduce_only=reduce_only,
            client_algo_id=cid,
        )

    def cancel_algo(self, symbol: str, algo_id: int) -> AlgoRecord:
        self.call(self.engine.cancel_algo, symbol, algo_id)
        return self.algos[algo_id]

    def cancel_all_algos(self, symbol: str) -> int:
        return self.call(self.engine.cancel_all_algo, symbol)

    def find_order(self, symbol: str, order_id: str | None, cid: str | None) -> OrderRecord:
        oid = _int_or_none(order_id) if order_id else self.order_by_cid.get(cid or "")
        rec = self.orders.get(oid) if oid is not None else None
        if rec is None or rec.order.symbol != symbol:
            raise BinanceError(-2013, "Order does not exist.")
        return rec

    def find_algo(self, symbol: str, algo_id: str | None, cid: str | None) -> AlgoRecord:
        aid = _int_or_none(algo_id) if algo_id else self.algo_by_cid.get(cid or "")
        rec = self.algos.get(aid) if aid is not None else None
        if rec is None or rec.order.symbol != symbol:
            raise BinanceError(-2013, "Order does not exist.")
        return rec

    def open_algos(self, symbol: str | None) -> list[AlgoRecord]:
        return [
            r
            for r in self.algos.values()
            if r.order.status is AlgoStatus.NEW and (symbol is None or r.order.symbol == symbol)
        ]

    def incomes(
        self, symbol: str | None, start: int | None, end: int | None, types: tuple[str, ...]
    ) -> list[Income]:
        return self.engine.income_history(symbol, start, end, types)

    # ------------------------------------------------------------------ events

    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run an engine operation; its rejection becomes Binance's JSON error, its events are published."""
        try:
            return fn(*args, **kwargs)
        except ExchangeError as exc:
            raise BinanceError(exc.code, exc.message) from None
        finally:
            self.publish()

    def publish(self) -> None:
        """Record the engine's new events, then hand them to every listener, in order, in the
        shapes Binance streams where they differ from the engine's (shared with the backtest):

        * a fired trigger is first announced as ``ALGO_UPDATE X=TRIGGERING`` (no order id yet), as
          Binance's algo service does before the matching engine accepts (TRIGGERED) or refuses
          (REJECTED) the order;
        * a liquidation or ADL execution (``x=CALCULATED``) is streamed with ``X=NEW``, as
          Binance's Order Update documentation says; REST shows the order's final FILLED.
        """
        if not self.engine.has_events:
            return
        for ev in self.engine.pop_events():
            if isinstance(ev, AlgoUpdate) and ev.status in (AlgoStatus.TRIGGERED, AlgoStatus.REJECTED):
                self._fan_out(replace(ev, status=AlgoStatus.TRIGGERING, triggered_order_id=0))
            self._record(ev)
            if isinstance(ev, OrderTradeUpdate) and ev.execution_type == "CALCULATED":
                ev = replace(ev, status=OrderStatus.NEW)
            self._fan_out(ev)

    def _fan_out(self, ev: ExchangeEvent) -> None:
        for listener in tuple(self.listeners):
            listener(ev)

    def _record(self, ev: ExchangeEvent) -> None:
        if isinstance(ev, OrderTradeUpdate):
            rec = self.orders.get(ev.order_id)
            if rec is None:
                order = Order(
                    ev.symbol,
                    ev.order_id,
                    ev.side,
                    ev.order_type,
                    ev.quantity,
                    ev.status,
                    ev.reduce_only,
                    ev.cumulative_filled_qty,
                    ev.avg_price,
                    ev.client_order_id,
                    ev.event_time_ms,
                )
                self.orders[ev.order_id] = OrderRecord(order, ev.trade_time_ms)
                self.order_by_cid[ev.client_order_id] = ev.order_id
            else:
                rec.order = replace(
                    rec.order, status=ev.status, executed_qty=ev.cumulative_filled_qty, avg_price=ev.avg_price
                )
                rec.update_ms = ev.trade_time_ms
            if ev.execution_type in ("TRADE", "CALCULATED"):
                self.fill_count += 1
        elif isinstance(ev, AlgoUpdate):
            arec = self.algos.get(ev.algo_id)
            if arec is None:
                order = ConditionalOrder(
                    ev.symbol,
                    ev.algo_id,
                    ev.side,
                    ev.order_type,
                    ev.quantity,
                    ev.trigger_price,
                    ev.status,
                    ev.reduce_only,
                    ev.client_algo_id,
                    ev.event_time_ms,
                )
                self.algos[ev.algo_id] = AlgoRecord(order, ev.event_time_ms)
                self.algo_by_cid[ev.client_algo_id] = ev.algo_id
            else:
                arec.order = replace(arec.order, status=ev.status)
                arec.update_ms = ev.event_time_ms
                arec.actual_order_id = ev.triggered_order_id or arec.actual_order_id

    def algo_fill(self, rec: AlgoRecord) -> tuple[float, float]:
        """Executed quantity and average price of the order an algo order triggered (0, 0 if none)."""
        o = self.orders.get(rec.actual_order_id)
        return (o.order.executed_qty, o.order.avg_price) if o else (0.0, 0.0)


def tran_id(r: Income) -> int:
    """A stable integer id for an income row (Binance's ``tranId``), from its content."""
    digest = hashlib.sha256(f"{r.symbol}|{r.income_type}|{r.time_ms}|{r.trade_id}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        raise BinanceError(-1100, "Illegal characters found in a parameter.") from None
