"""Rounding by symbol filters and Binance's filter rejections (SPEC §8.4, §13 row 18)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpbot.domain.types import SymbolFilters
from perpbot.exchange.errors import INVALID_QUANTITY, MIN_NOTIONAL, PRECISION, ExchangeError
from perpbot.exchange.filters import (
    QTY_ABOVE_MAX,
    QTY_BELOW_MIN,
    ceil_qty,
    floor_qty,
    from_steps,
    is_multiple,
    round_price,
    snap,
    validate_order,
)

STEPS = ["1", "0.1", "0.01", "0.001", "0.0001", "0.00001", "10", "0.5", "0.025"]
step_strs = st.sampled_from(STEPS)
counts = st.integers(min_value=0, max_value=10**9)


def dec_float(n: int, step: str) -> float:
    """The float a user means by ``n`` steps of ``step`` (what the exchange expects)."""
    return float(Decimal(n) * Decimal(step))


# ---------------------------------------------------------------- classic binary-float traps


@pytest.mark.parametrize(
    ("q", "step", "expected"),
    [
        (0.3, 0.1, 0.3),  # 0.3/0.1 = 2.9999999999999996 in binary floats
        (0.1 + 0.2, 0.1, 0.3),  # 0.30000000000000004
        (0.29, 0.1, 0.2),
        (1.0, 1.0, 1.0),
        (57.99999999999999, 1.0, 58.0),  # float noise just under an integer
        (57.9, 1.0, 57.0),
        (4.35, 0.05, 4.35),
        (0.0, 0.001, 0.0),
        (123456.7891, 0.001, 123456.789),
    ],
)
def test_floor_qty_is_robust_to_float_representation(q: float, step: float, expected: float) -> None:
    assert floor_qty(q, step) == expected


@pytest.mark.parametrize(
    ("p", "tick", "expected"),
    [
        (0.12345, 0.0001, 0.1235),  # an exact half rounds up
        (0.12344, 0.0001, 0.1234),
        (2.675, 0.01, 2.68),  # 2.675 is stored as 2.67499999999999982236431605997495353221893310546875
        (100.0000000001, 0.01, 100.0),
        (1.005, 0.01, 1.01),
        (99.999, 0.5, 100.0),
    ],
)
def test_round_price_nearest_tick(p: float, tick: float, expected: float) -> None:
    assert round_price(p, tick) == expected


def test_is_multiple_edge_cases() -> None:
    assert is_multiple(0.3, 0.1)
    assert is_multiple(0.1 + 0.2, 0.1)
    assert is_multiple(1e12, 1.0)
    assert is_multiple(0.0, 0.1)
    assert not is_multiple(0.35, 0.1)
    assert not is_multiple(1e12 + 0.5, 1.0)
    assert not is_multiple(10.5, 1.0)
    assert not is_multiple(0.12345, 0.0001)


def test_ceil_qty_and_snap_and_from_steps() -> None:
    assert ceil_qty(0.3, 0.1) == 0.3
    assert ceil_qty(0.31, 0.1) == 0.4
    assert ceil_qty(5 / 0.5123, 1.0) == 10.0
    assert snap(0.30000000000000004, 0.1) == 0.3
    assert from_steps(3, 0.1) == 0.3


def test_non_positive_step_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        floor_qty(1.0, 0.0)
    with pytest.raises(ValueError):
        round_price(1.0, -0.1)


# ---------------------------------------------------------------- properties


@given(n=counts, step=step_strs)
def test_exact_multiples_are_recognised_and_preserved(n: int, step: str) -> None:
    x = dec_float(n, step)
    s = float(step)
    assert is_multiple(x, s)
    assert floor_qty(x, s) == x
    assert round_price(x, s) == x
    assert ceil_qty(x, s) == x


@given(q=st.floats(min_value=0, max_value=1e9, allow_nan=False), step=step_strs)
def test_floor_qty_properties(q: float, step: str) -> None:
    s = float(step)
    r = floor_qty(q, s)
    assert is_multiple(r, s)
    assert r <= q * (1 + 1e-12) + 1e-9 * s  # never rounds up beyond float noise
    assert q - r < s * (1 + 1e-9)  # never drops a whole step
    # the result is the clean decimal, not a binary approximation of it
    assert Decimal(repr(r)) % Decimal(step) == 0


@given(p=st.floats(min_value=1e-6, max_value=1e7, allow_nan=False), tick=step_strs)
def test_round_price_properties(p: float, tick: str) -> None:
    t = float(tick)
    r = round_price(p, t)
    assert is_multiple(r, t)
    assert abs(r - p) <= t / 2 * (1 + 1e-6) + abs(p) * 1e-12
    assert Decimal(repr(r)) % Decimal(tick) == 0


@given(n=st.integers(min_value=1, max_value=10**6), step=step_strs, frac=st.floats(0.01, 0.99))
def test_off_grid_values_are_rejected(n: int, step: str, frac: float) -> None:
    s = float(step)
    x = (n + frac) * s
    assert not is_multiple(x, s)


# ---------------------------------------------------------------- validate_order

F = SymbolFilters("XRPUSDT", tick_size=0.0001, step_size=0.1, min_qty=0.1, min_notional=5.0, max_qty=1e6)


def code_of(qty: float, price: float, reduce_only: bool = False, **kw: float) -> int | None:
    try:
        validate_order(F, qty, price, reduce_only, **kw)
    except ExchangeError as exc:
        return exc.code
    return None


def test_validate_order_codes() -> None:
    assert code_of(10.0, 0.6) is None
    assert code_of(0.0, 0.6) == INVALID_QUANTITY
    assert code_of(-1.0, 0.6) == INVALID_QUANTITY
    assert code_of(float("nan"), 0.6) == INVALID_QUANTITY
    assert code_of(10.05, 0.6) == PRECISION  # 2 decimals where the step is 0.1
    assert code_of(10.0, 0.6, trigger_price=0.60005) == PRECISION  # off-tick trigger
    assert code_of(10.0, 0.6, trigger_price=0.6001) is None
    assert code_of(2e6, 0.6) == QTY_ABOVE_MAX
    assert code_of(8.0, 0.6) == MIN_NOTIONAL  # 4.8 USDT
    assert code_of(8.0, 0.6, reduce_only=True) is None  # reduce-only is exempt
    assert code_of(0.1 + 0.2, 100.0) is None  # 0.30000000000000004 is on the grid


def test_validate_order_min_qty() -> None:
    f = SymbolFilters("BTCUSDT", tick_size=0.1, step_size=0.001, min_qty=0.01, min_notional=5.0)
    with pytest.raises(ExchangeError) as ei:
        validate_order(f, 0.005, 60_000.0)
    assert ei.value.code == QTY_BELOW_MIN
    validate_order(f, 0.01, 60_000.0)


def test_notional_exactly_at_minimum_is_accepted() -> None:
    validate_order(F, 10.0, 0.5)  # 5.000000000 USDT after float multiply
    validate_order(F, 0.1 * 3, 5 / 0.3)
