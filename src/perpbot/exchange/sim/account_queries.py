"""The matching engine's read-only answers about the account: balances, positions, settings, open
and past orders, fills, income rows and the events not yet collected.

Why a module of its own: ``engine.py`` decides what orders, bars and settings *do* (the rules of
the API); these methods only report the state that results, the way Binance's GET endpoints and
the backtest's bookkeeping read it. They change nothing but the event queue they hand over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perpbot.domain.events import ExchangeEvent
from perpbot.domain.types import (
    AccountState,
    AlgoStatus,
    ConditionalOrder,
    Fill,
    Income,
    Order,
    Position,
    Side,
    SymbolFilters,
)
from perpbot.exchange.errors import INVALID_SYMBOL, ExchangeError
from perpbot.exchange.sim.reports import conditional

if TYPE_CHECKING:
    from perpbot.exchange.sim.book import Book
    from perpbot.exchange.sim.clearing import Clearing
    from perpbot.exchange.sim.registry import OrderRegistry


class AccountQueries:
    """Mixed into ``MatchingEngine`` (the attributes below are the engine's)."""

    _books: dict[str, Book]
    _filters: dict[str, SymbolFilters]
    _events: list[ExchangeEvent]
    _clr: Clearing
    _registry: OrderRegistry

    if TYPE_CHECKING:

        def _book(self, symbol: str) -> Book: ...

        def last_price(self, symbol: str) -> float: ...

    def quiet(self, symbol: str) -> bool:
        """Nothing on ``symbol``'s book can react to a bar: no position (no funding, no
        liquidation), no resting trigger order, no open order. Processing a bar of a quiet book
        only moves its bar index, and ``process_bar`` accepts gaps, so a backtest may let such
        bars pass unprocessed (the skip-ahead of ``backtest.agenda``)."""
        return not self._books[symbol].armed and not self._registry.has_open(symbol)

    def symbols(self) -> list[str]:
        return list(self._books)

    def symbol_filters(self, symbol: str) -> SymbolFilters:
        if symbol not in self._filters:
            raise ExchangeError(INVALID_SYMBOL, "Invalid symbol.")
        return self._filters[symbol]

    def balance(self) -> float:
        """Wallet balance (Binance ``balance``): cross part plus every isolated margin, no uPnL."""
        return self._clr.wallet

    def available_balance(self) -> float:
        """What a new order may use: wallet minus the isolated margins in use."""
        return self._clr.available_balance()

    def position(self, symbol: str) -> Position | None:
        """The open position of ``symbol`` or None; uPnL at the last price."""
        b = self._book(symbol)
        if b.qty == 0.0:
            return None
        return Position(
            symbol=symbol,
            side=Side.LONG if b.qty > 0 else Side.SHORT,
            quantity=abs(b.qty),
            entry_price=b.entry,
            leverage=b.leverage,
            isolated_margin=b.iw,
            unrealized_pnl=(self.last_price(symbol) - b.entry) * b.qty,
            liquidation_price=b.liq,
        )

    def account_state(self) -> AccountState:
        positions = {s: p for s in self._books if (p := self.position(s)) is not None}
        return AccountState(self._clr.wallet, self.available_balance(), positions)

    def leverage(self, symbol: str) -> int:
        return self._book(symbol).leverage

    def margin_type(self, symbol: str) -> str:
        return self._book(symbol).margin_type

    def open_orders(self, symbol: str) -> list[Order]:
        """Open normal orders: only MARKET orders exist here and they fill at once, so this is empty
        except for a hostile-mode order that was accepted and not yet executed."""
        self._book(symbol)
        return self._registry.open_orders(symbol)

    def open_algo_orders(self, symbol: str) -> list[ConditionalOrder]:
        b = self._book(symbol)
        return [conditional(symbol, a, AlgoStatus.NEW) for a in b.algos.values()]

    def income_count(self, symbol: str) -> int:
        """Income rows of ``symbol`` so far (``Ledger.income_count``)."""
        return self._clr.ledger.income_count(symbol)

    def income_history(
        self,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        income_types: tuple[str, ...] | list[str] = (),
    ) -> list[Income]:
        """Income rows (REALIZED_PNL, COMMISSION, FUNDING_FEE, INSURANCE_CLEAR) in time order,
        filtered by symbol, ``start_ms ≤ time ≤ end_ms`` and type (all when empty)."""
        return self._clr.ledger.income_history(symbol, start_ms, end_ms, income_types)

    def fills(self, symbol: str | None = None, start_ms: int | None = None) -> list[Fill]:
        """Every execution so far (Binance's account trade list), optionally for one symbol and
        with ``time >= start_ms``."""
        return self._clr.ledger.fills_of(symbol, start_ms)

    @property
    def has_events(self) -> bool:
        """True when ``pop_events`` would return something (a cheap check for the hot loop)."""
        return bool(self._events)

    def pop_events(self) -> list[ExchangeEvent]:
        """Events produced since the last call, in the order the exchange produced them."""
        ev = self._events.copy()
        self._events.clear()
        return ev

    def order(self, symbol: str, order_id: int = 0, client_order_id: str = "") -> Order:
        """``GET /fapi/v1/order`` by order id or client id (finished orders too); -2013 if unknown."""
        self._book(symbol)
        return self._registry.find(symbol, order_id, client_order_id).snapshot()

    def algo_order(self, symbol: str, algo_id: int = 0, client_algo_id: str = "") -> ConditionalOrder:
        """``GET /fapi/v1/algoOrder`` by algo id or client algo id, with its latest status."""
        self._book(symbol)
        return self._registry.find_algo(symbol, algo_id, client_algo_id)

    def incomes_since(self, k: int) -> list[Income]:
        """Income rows in the order they were booked, from the ``k``-th one (adapter bookkeeping)."""
        return self._clr.ledger.incomes[k:]
