"""The simulated account's records: every execution (Binance's account trade list) and every
income row (REALIZED_PNL, COMMISSION, FUNDING_FEE, INSURANCE_CLEAR).

Separate from the clearing of executions because these are the account's history, read by REST
queries (``userTrades``, ``income``) and by the funding settlement ("what was open at the
stamp?"), while the clearing only appends to them. Income rows are also kept per symbol in time
order (stable for equal stamps) with their times beside them, so a bot's lookup at each close is a
binary search, not a scan of every row.
"""

from __future__ import annotations

import bisect

from perpbot.domain.types import Fill, Income, OrderSide


class Ledger:
    """Fills and income rows of the simulated account, in the order they were booked."""

    def __init__(self) -> None:
        self.fills: list[Fill] = []
        # Per symbol, in booking order, with their times: a bot's ``userTrades`` after each entry
        # is a binary search, not a scan of every fill of the run (issue 13).
        self._fills_by_symbol: dict[str, list[Fill]] = {}
        self._fill_times: dict[str, list[int]] = {}
        self._fills_unordered: set[str] = set()
        self.incomes: list[Income] = []
        self._incomes_by_symbol: dict[str, list[Income]] = {}
        self._income_times: dict[str, list[int]] = {}

    def record_fill(
        self,
        symbol: str,
        oid: int,
        tid: int,
        side: OrderSide,
        price: float,
        q: float,
        fee: float,
        rp: float,
        now: int,
    ) -> None:
        """One execution and the income rows it books (realised PnL, commission) when non-zero."""
        fill = Fill(symbol, oid, tid, side, price, q, fee, rp, now)
        self.fills.append(fill)
        times = self._fill_times.setdefault(symbol, [])
        if times and now < times[-1]:
            self._fills_unordered.add(symbol)  # stamped back in time: lookups scan instead
        times.append(now)
        self._fills_by_symbol.setdefault(symbol, []).append(fill)
        if rp != 0.0:
            self.add_income(Income(symbol, "REALIZED_PNL", rp, now, str(tid)))
        if fee != 0.0:
            self.add_income(Income(symbol, "COMMISSION", -fee, now, str(tid)))

    def add_income(self, row: Income) -> None:
        self.incomes.append(row)
        rows = self._incomes_by_symbol.setdefault(row.symbol, [])
        times = self._income_times.setdefault(row.symbol, [])
        at = bisect.bisect_right(times, row.time_ms)
        rows.insert(at, row)
        times.insert(at, row.time_ms)

    def income_count(self, symbol: str) -> int:
        """How many income rows ``symbol`` has; rows are only ever added, so an unchanged count
        means an unchanged income history (the backtest's skip-ahead, ``backtest.loop``)."""
        return len(self._income_times.get(symbol, ()))

    def income_history(
        self,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        income_types: tuple[str, ...] | list[str] = (),
    ) -> list[Income]:
        """Income rows in time order, filtered by symbol, ``start_ms ≤ time ≤ end_ms`` and type
        (all when empty)."""
        types = set(income_types)
        if symbol is None:
            candidates: list[Income] = sorted(self.incomes, key=lambda r: r.time_ms)
            lo, hi = 0, len(candidates)
            if start_ms is not None:
                lo = bisect.bisect_left(candidates, start_ms, key=lambda r: r.time_ms)
            if end_ms is not None:
                hi = bisect.bisect_right(candidates, end_ms, key=lambda r: r.time_ms)
        else:
            candidates = self._incomes_by_symbol.get(symbol, [])
            times = self._income_times.get(symbol, [])
            lo = 0 if start_ms is None else bisect.bisect_left(times, start_ms)
            hi = len(times) if end_ms is None else bisect.bisect_right(times, end_ms)
        return [r for r in candidates[lo:hi] if not types or r.income_type in types]

    def fills_of(self, symbol: str | None = None, start_ms: int | None = None) -> list[Fill]:
        """Every execution so far, optionally for one symbol and from ``start_ms`` on, in
        booking order."""
        if symbol is None:
            return [f for f in self.fills if start_ms is None or f.time_ms >= start_ms]
        rows = self._fills_by_symbol.get(symbol, [])
        if start_ms is None:
            return list(rows)
        if symbol in self._fills_unordered:
            return [f for f in rows if f.time_ms >= start_ms]
        return rows[bisect.bisect_left(self._fill_times[symbol], start_ms) :]

    def qty_at(self, symbol: str, qty: float, t: int) -> float:
        """The signed position of ``symbol`` at exchange time ``t``, given its current one ``qty``:
        the current one without the executions stamped after ``t`` (fills are in time order)."""
        for f in reversed(self.fills):
            if f.time_ms <= t:
                break
            if f.symbol == symbol:
                qty -= f.quantity if f.side is OrderSide.BUY else -f.quantity
        return qty if abs(qty) > 1e-12 else 0.0
