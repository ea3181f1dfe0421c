"""Clearing: what an execution does to the simulated account.

A market fill, a triggered conditional order, a liquidation, an auto-deleveraging and a funding
settlement all end here: the position changes (``position.py``), the wallet moves, the execution
and its income rows are recorded (``ledger.py``), the order's state is kept for REST reads
(``registry.py``) and the events are emitted (``reports.py``) in Binance's order.

Money (the wallet side of ``position.py``'s model)
--------------------------------------------------
* ``wallet`` is Binance's wallet balance (cross part + every isolated margin); commissions and
  realised PnL go to it; available balance for a new order is ``wallet − Σ iw``. Funding is paid
  into/out of the isolated margin too (so it moves the liquidation price, as on Binance).
* Fees: every fill is a taker fill (``taker_fee`` on notional); ``maker_fee`` is kept for a
  future limit-order model. Slippage: ``slippage_bps`` adverse on market fills and on triggered
  conditional fills (gap fills included); liquidation fills carry none.
* Liquidation: the mark price is approximated by the trade-price path of the candle. The
  position is closed at LP whatever the bar did (a gap through LP is absorbed by the insurance
  fund, not the user): realised PnL ``rp = side·(LP − EP)·q``; what remains of the isolated
  margin, ``iw + rp`` (≈ mmr·q·LP), is taken as the clearance fee up to
  ``liquidation_fee_rate·q·LP`` (INSURANCE_CLEAR income row); the rest, if any, returns to the
  wallet. With the defaults (mmr 0.5 % < fee 1.25 %) the whole isolated margin is lost.
* Funding: ``payment = −qty·open[i]·rate`` on the quantity open at the settlement stamp (longs
  pay a positive rate); FUNDING_FEE income row (time = ``open_time[i]``) and
  ACCOUNT_UPDATE(FUNDING_FEE).
* A reduce-only conditional order that fires while flat (or on a position of the wrong side), or
  an opening one that can no longer be margined, is REJECTED (ALGO_UPDATE status REJECTED, no
  order is created) — the exchange does not cancel siblings, the bot must.

Separate from ``MatchingEngine`` (the account's API: validation, queries, the bar loop) because
this is the one place that moves money; the engine decides *whether* something executes, the
clearing *what it does*. It shares the engine's books and event list (never rebound) and reads
the engine's clock through ``now``.
"""

from __future__ import annotations

from collections.abc import Callable

from perpbot.domain.events import AccountUpdate, ExchangeEvent
from perpbot.domain.types import AlgoStatus, Income, OrderSide, OrderStatus, OrderType
from perpbot.exchange.errors import MARGIN_INSUFFICIENT, ExchangeError
from perpbot.exchange.filters import floor_qty, from_steps, steps_of
from perpbot.exchange.sim import reports
from perpbot.exchange.sim.book import Algo, Book, rearm
from perpbot.exchange.sim.intrabar import LIQ, Hit
from perpbot.exchange.sim.ledger import Ledger
from perpbot.exchange.sim.position import apply_fill, recompute_liq
from perpbot.exchange.sim.registry import LiveOrder, OrderRegistry
from perpbot.exchange.sim.settings import ADL_CLIENT_ID, SimSettings


class Clearing:
    """The wallet, the records and the mechanics of every execution (module docstring)."""

    def __init__(
        self,
        settings: SimSettings,
        books: dict[str, Book],
        events: list[ExchangeEvent],
        now: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.books = books
        self.events = events
        self.now = now
        self.wallet = float(settings.initial_balance)
        self.ledger = Ledger()
        self.registry = OrderRegistry()
        self._next_order_id = 1_000_001
        self._next_trade_id = 1
        self._slip = settings.slippage_bps / 10_000.0
        self._mmr = settings.maintenance_margin_rate

    def available_balance(self) -> float:
        """What a new order may use: wallet minus the isolated margins in use."""
        return self.wallet - sum(b.iw for b in self.books.values())

    def new_order_id(self) -> int:
        oid = self._next_order_id
        self._next_order_id += 1
        return oid

    def _new_trade_id(self) -> int:
        tid = self._next_trade_id
        self._next_trade_id += 1
        return tid

    def check_margin(self, b: Book, sgn: int, qty: float, price: float) -> None:
        """-2019 when the opening part of the order cannot be margined (flip: after the close)."""
        pos = b.qty
        close = min(qty, abs(pos)) if pos != 0.0 and (pos > 0) != (sgn > 0) else 0.0
        open_qty = qty - close
        if open_qty <= 0.0:
            return
        avail = self.available_balance()
        if close > 0.0:
            avail += b.iw * close / abs(pos) + (price - b.entry) * close * (1 if pos > 0 else -1)
        need = open_qty * price / b.leverage + qty * price * self.settings.taker_fee
        if need > avail:
            raise ExchangeError(MARGIN_INSUFFICIENT, "Margin is insufficient.")

    # ------------------------------------------------------------------ orders and fills

    def open_order(
        self,
        b: Book,
        oid: int,
        cid: str,
        side: OrderSide,
        orig_qty: float,
        reduce_only: bool,
        original_type: OrderType,
    ) -> LiveOrder:
        """Register a MARKET order and emit its ``x=NEW`` report."""
        now = self.now()
        o = LiveOrder(b.symbol, oid, cid, side, OrderType.MARKET, original_type, orig_qty, reduce_only, now)
        self.registry.add(o)
        self.events.append(reports.order_report(o, "NEW", 0.0, 0.0, 0.0, 0.0, 0, now))
        return o

    def end_order(self, b: Book, o: LiveOrder, status: OrderStatus, x: str) -> None:
        """End an open order without executing more (EXPIRED / CANCELED), keeping what it did."""
        o.status = status
        self.events.append(reports.order_report(o, x, 0.0, 0.0, 0.0, 0.0, 0, self.now()))
        rearm(b)

    def execute(self, b: Book, o: LiveOrder, exec_qty: float, price: float, *, last: bool) -> float:
        """TRADE executions of ``exec_qty`` at ``price`` (split by ``max_fill_qty_per_execution``),
        each followed by ACCOUNT_UPDATE; the final one reports FILLED when ``last``. Returns ap."""
        now = self.now()
        step = b.filters.step_size
        total = steps_of(exec_qty, step)
        chunk = total
        mx = self.settings.max_fill_qty_per_execution
        if mx > 0.0:
            chunk = max(1, steps_of(floor_qty(mx, step), step))
        done = 0
        sgn = 1 if o.side is OrderSide.BUY else -1
        while done < total:
            n = min(chunk, total - done)
            done += n
            o.done_steps += n
            q = from_steps(n, step)
            o.executed = from_steps(o.done_steps, step)
            o.notional += q * price
            fee = q * price * self.settings.taker_fee
            rp = self._apply_fill(b, sgn, q, price, fee)
            tid = self._new_trade_id()
            o.status = OrderStatus.FILLED if (last and done == total) else OrderStatus.PARTIALLY_FILLED
            self.events.append(reports.order_report(o, "TRADE", q, price, fee, rp, tid, now))
            self.ledger.record_fill(b.symbol, o.order_id, tid, o.side, price, q, fee, rp, now)
            b.last_fill_ms = now
            self.events.append(self.account_update("ORDER", b, price))
        if last and total == 0:
            o.status = OrderStatus.FILLED
        rearm(b)
        return o.avg_price

    def _apply_fill(self, b: Book, sgn: int, q: float, price: float, fee: float) -> float:
        """One execution on the position and the wallet; returns realised PnL."""
        rp = apply_fill(b, sgn, q, price, self._mmr)
        self.wallet += rp - fee
        return rp

    def deleverage(self, b: Book, q: float, px: float) -> LiveOrder:
        """Close ``q`` of ``b``'s position at ``px`` as an ADL order (``MatchingEngine.deleverage``)."""
        now = self.now()
        side = OrderSide.SELL if b.qty > 0 else OrderSide.BUY
        sgn = 1 if side is OrderSide.BUY else -1
        oid = self.new_order_id()
        o = LiveOrder(
            b.symbol,
            oid,
            ADL_CLIENT_ID,
            side,
            OrderType.LIQUIDATION,
            OrderType.LIQUIDATION,
            q,
            True,
            now,
        )
        self.registry.add(o)
        rp = self._apply_fill(b, sgn, q, px, 0.0)
        tid = self._new_trade_id()
        o.done_steps = steps_of(q, b.filters.step_size)
        o.executed, o.notional, o.status = q, q * px, OrderStatus.FILLED
        self.events.append(reports.order_report(o, "CALCULATED", q, px, 0.0, rp, tid, now))
        self.ledger.record_fill(b.symbol, oid, tid, side, px, q, 0.0, rp, now)
        b.last_fill_ms = now
        self.events.append(self.account_update("ORDER", b, px))
        rearm(b)
        return o

    # ------------------------------------------------------------------ what a bar sets off

    def fire(self, b: Book, hit: Hit, price: float) -> None:
        """A trigger met by the intra-bar walk (``intrabar.walk``) fires at ``price``."""
        if hit == LIQ:
            self._liquidate(b)
        else:
            assert isinstance(hit, Algo)
            self._trigger(b, hit, price)

    def _trigger(self, b: Book, a: Algo, price: float) -> None:
        """A conditional order fires: hand a MARKET order with a new id to the matching engine."""
        del b.algos[a.algo_id]
        sgn = 1 if a.side is OrderSide.BUY else -1
        pos = b.qty
        if a.reduce_only:
            if pos == 0.0 or (pos > 0) == (sgn > 0):
                rearm(b)
                self.emit_algo(b.symbol, a, AlgoStatus.REJECTED)
                return
            exec_qty = min(a.quantity, abs(pos))
        else:
            exec_qty = a.quantity
        fill_px = price * (1.0 + sgn * self._slip)
        if not a.reduce_only:
            try:
                self.check_margin(b, sgn, exec_qty, fill_px)
            except ExchangeError:
                rearm(b)
                self.emit_algo(b.symbol, a, AlgoStatus.REJECTED)
                return
        oid = self.new_order_id()
        self.emit_algo(b.symbol, a, AlgoStatus.TRIGGERED, oid)
        ot = a.type if self.settings.report_original_type else OrderType.MARKET
        o = self.open_order(b, oid, a.client_algo_id, a.side, a.quantity, a.reduce_only, ot)
        self.execute(b, o, exec_qty, fill_px, last=True)
        self.emit_algo(b.symbol, a, AlgoStatus.FINISHED, oid)

    def _liquidate(self, b: Book) -> None:
        s = self.settings
        now = self.now()
        q = abs(b.qty)
        lp = b.liq
        sgn_pos = 1.0 if b.qty > 0 else -1.0
        side = OrderSide.SELL if b.qty > 0 else OrderSide.BUY
        rp = sgn_pos * (lp - b.entry) * q
        remaining = max(0.0, b.iw + rp)
        clear = min(remaining, s.liquidation_fee_rate * q * lp)
        oid = self.new_order_id()
        tid = self._new_trade_id()
        lo = LiveOrder(
            b.symbol,
            oid,
            f"autoclose-{oid}",
            side,
            OrderType.LIQUIDATION,
            OrderType.LIQUIDATION,
            q,
            True,
            now,
        )
        lo.done_steps, lo.executed, lo.notional = steps_of(q, b.filters.step_size), q, q * lp
        lo.status, lo.update_time_ms = OrderStatus.FILLED, now
        self.registry.add(lo)
        b.qty, b.entry, b.iw, b.liq = 0.0, 0.0, 0.0, 0.0
        self.wallet += rp
        self.events.append(reports.liquidation_report(b.symbol, oid, side, q, lp, rp, tid, now))
        self.ledger.record_fill(b.symbol, oid, tid, side, lp, q, 0.0, rp, now)
        b.last_fill_ms = now
        self.events.append(self.account_update("ORDER", b, lp))
        if clear > 0.0:
            self.wallet -= clear
            self.ledger.add_income(Income(b.symbol, "INSURANCE_CLEAR", -clear, now, str(tid)))
            self.events.append(self.account_update("INSURANCE_CLEAR", b, lp, -clear))
        rearm(b)

    def settle_funding(self, b: Book, i: int) -> None:
        """Charge the settlement stamped at bar ``i``'s open on the quantity open at that stamp,
        as Binance does (a position opened after it pays nothing, one closed after it pays)."""
        rate = b.funding[i]
        price = b.open[i]
        t = b.open_time[i]
        qty = b.qty if b.last_fill_ms <= t else self.ledger.qty_at(b.symbol, b.qty, t)
        payment = -qty * price * rate  # signed qty: longs pay a positive rate
        if payment == 0.0:
            return
        self.wallet += payment
        if b.qty != 0.0:  # a position closed since the stamp has no isolated margin left
            b.iw += payment
        recompute_liq(b, self._mmr)
        rearm(b)
        self.ledger.add_income(Income(b.symbol, "FUNDING_FEE", payment, t, f"funding-{t}"))
        self.events.append(self.account_update("FUNDING_FEE", b, price, payment))

    # ------------------------------------------------------------------ events

    def account_update(self, reason: str, b: Book, mark: float, bc: float = 0.0) -> AccountUpdate:
        return reports.account_update(reason, b, mark, self.wallet, self.available_balance(), bc, self.now())

    def emit_algo(self, symbol: str, a: Algo, status: AlgoStatus, triggered_order_id: int = 0) -> None:
        self.registry.record_algo(reports.conditional(symbol, a, status, triggered_order_id))
        self.events.append(reports.algo_update(symbol, a, status, triggered_order_id, self.now()))
