"""Symbol filters the simulator uses when no exchange is asked (backtests over recorded data).

Why a table: the recorded candle files carry prices only, not the exchange's PRICE_FILTER /
LOT_SIZE rules, yet a backtest must reject exactly the orders Binance would reject (-1111 off the
grid, -4164 under the minimum notional). The values below are Binance USDT-M's published filters
for these symbols as recorded when this table was written; they change rarely but do change, so
the live adapter must read them from ``GET /fapi/v1/exchangeInfo`` (cached 24 h, SPEC §13 row 18)
and never from here. Symbols not in the table get filters estimated from their price level.
"""

from __future__ import annotations

import math

from perpbot.domain.types import SymbolFilters

MIN_NOTIONAL = 5.0  # USDT, Binance's MIN_NOTIONAL for these USDT-M perpetuals

KNOWN_FILTERS: dict[str, tuple[float, float, float]] = {
    # symbol: (tick_size, step_size, min_qty)
    "XRPUSDT": (0.0001, 0.1, 0.1),
    "TRXUSDT": (0.00001, 1.0, 1.0),
    "DOGEUSDT": (0.00001, 1.0, 1.0),
    "BTCUSDT": (0.1, 0.001, 0.001),
    "ETHUSDT": (0.01, 0.001, 0.001),
}


def derived_filters(symbol: str, reference_price: float) -> SymbolFilters:
    """The table's filters for ``symbol``, else filters estimated from its price level.

    Estimate: tick = 5 significant digits of the price (Binance's usual precision); step such that
    one step is worth at most ~0.1 USDT, never finer than 0.001 (Binance's finest step).
    Deterministic, so a backtest of an unlisted symbol is reproducible.
    """
    if symbol in KNOWN_FILTERS:
        tick, step, min_qty = KNOWN_FILTERS[symbol]
        return SymbolFilters(symbol, tick, step, min_qty, MIN_NOTIONAL)
    p = reference_price if reference_price > 0 and math.isfinite(reference_price) else 1.0
    tick = 10.0 ** (math.floor(math.log10(p)) - 4)
    step = max(10.0 ** math.floor(math.log10(0.1 / p)), 0.001)
    tick = float(f"{tick:.0e}")
    step = float(f"{step:.0e}")
    return SymbolFilters(symbol, tick, step, step, MIN_NOTIONAL)
