"""Rounding and validation by a symbol's exchange filters (tick size, step size, minimum notional).

Both the simulated exchange and the bot's sizing use these functions, so an order the bot builds
is accepted by the simulator exactly when Binance would accept it (SPEC §8.4, §13 row 18).

Why integer steps: binary floats cannot represent most decimal step sizes (0.1, 0.001), so naive
``q % step`` or ``floor(q / step)`` gives wrong answers such as ``floor(0.3 / 0.1) == 2``. Every
function here converts to a whole number of steps with a small tolerance, then converts back
through ``Decimal`` so that the returned float is the shortest decimal a human would write
(``0.3``, not ``0.30000000000000004``) and serialises to the exchange without precision errors.
"""

from __future__ import annotations

import math
from decimal import Decimal
from functools import lru_cache

from perpbot.domain.types import SymbolFilters
from perpbot.exchange.errors import (
    INVALID_QUANTITY,
    MIN_NOTIONAL,
    PRECISION,
    QTY_ABOVE_MAX,
    QTY_BELOW_MIN,
    ExchangeError,
)

# How far (in steps) a ratio may sit from an integer and still count as that integer. Float error
# of x/step is about 3e-16 relative, so 1e-9 absolute covers every realistic count of steps, and
# the relative term keeps very large counts (1e9+ steps) from being judged off-grid.
_ABS_TOL = 1e-9
_REL_TOL = 1e-14


@lru_cache(maxsize=256)
def _dec(step: float) -> Decimal:
    """The decimal the caller meant by ``step`` (``repr`` is the shortest round-tripping form)."""
    return Decimal(repr(float(step)))


def _check_step(step: float) -> None:
    if not (step > 0.0) or math.isinf(step):
        raise ValueError(f"step/tick must be a positive finite number, got {step!r}")


def _tol(n: float) -> float:
    return max(_ABS_TOL, abs(n) * _REL_TOL)


def from_steps(n: int, step: float) -> float:
    """``n`` steps as a clean decimal float, the one nearest to the exact decimal product
    (``from_steps(3, 0.1) == 0.3``)."""
    return float(Decimal(n) * _dec(step))


def steps_of(x: float, step: float) -> int:
    """Nearest whole number of ``step`` in ``x`` (tolerant of float representation error)."""
    _check_step(step)
    return round(x / step)


def snap(x: float, step: float) -> float:
    """``x`` moved to the nearest multiple of ``step`` and written as a clean decimal float.

    For values known to be on the grid up to float drift (sums of fills, position amounts).
    """
    return from_steps(steps_of(x, step), step)


def is_multiple(x: float, step: float) -> bool:
    """True when ``x`` is an integer multiple of ``step`` up to float representation error."""
    _check_step(step)
    r = x / step
    return abs(r - round(r)) <= _tol(r)


def round_price(p: float, tick: float) -> float:
    """Nearest multiple of ``tick`` (exact halves round up, after tolerance for float error)."""
    _check_step(tick)
    r = p / tick
    n = math.floor(r + 0.5 + _tol(r))
    return from_steps(n, tick)


def floor_qty(q: float, step: float) -> float:
    """Largest multiple of ``step`` not above ``q`` (a value a hair below a multiple counts as it)."""
    _check_step(step)
    r = q / step
    n = math.floor(r + _tol(r))
    return from_steps(n, step)


def ceil_qty(q: float, step: float) -> float:
    """Smallest multiple of ``step`` not below ``q`` (used to bump a size over the minimum notional)."""
    _check_step(step)
    r = q / step
    n = math.ceil(r - _tol(r))
    return from_steps(n, step)


def validate_order(
    filters: SymbolFilters,
    qty: float,
    price: float,
    reduce_only: bool = False,
    *,
    trigger_price: float | None = None,
) -> None:
    """Raise ``ExchangeError`` with Binance's code when an order breaks the symbol's filters.

    ``price`` is the reference price for the notional check (the expected fill price of a MARKET
    order, the trigger price of a conditional one); it is not tick-checked because a market
    order carries no price. ``trigger_price``, when given, must be a multiple of the tick.
    Order of checks mirrors the exchange: quantity sign, precision, quantity bounds, notional.
    """
    if not (qty > 0.0) or math.isnan(qty):
        raise ExchangeError(INVALID_QUANTITY, "Quantity less than or equal to zero.")
    if not is_multiple(qty, filters.step_size):
        raise ExchangeError(
            PRECISION,
            f"Precision is over the maximum defined for this asset "
            f"(qty {qty!r}, step {filters.step_size!r}).",
        )
    if trigger_price is not None and (
        not (trigger_price > 0.0) or not is_multiple(trigger_price, filters.tick_size)
    ):
        raise ExchangeError(
            PRECISION,
            f"Precision is over the maximum defined for this asset "
            f"(price {trigger_price!r}, tick {filters.tick_size!r}).",
        )
    if qty < filters.min_qty - _tol(filters.min_qty / filters.step_size) * filters.step_size:
        raise ExchangeError(QTY_BELOW_MIN, f"Quantity less than minimum quantity ({filters.min_qty!r}).")
    if qty > filters.max_qty:
        raise ExchangeError(QTY_ABOVE_MAX, f"Quantity greater than maximum quantity ({filters.max_qty!r}).")
    if not reduce_only and qty * price < filters.min_notional * (1.0 - 1e-12):
        raise ExchangeError(
            MIN_NOTIONAL,
            f"Order's notional must be no smaller than {filters.min_notional:g} "
            "(unless you choose reduce only).",
        )
