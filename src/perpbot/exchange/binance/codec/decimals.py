"""Binance's decimal strings (prices, quantities, amounts) and the types every shape shares.

Separate because every other codec module writes and reads numbers through these two functions:
one definition of "a float as Binance prints it" keeps the simulator's output byte-comparable.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

Json = dict[str, Any]
ASSET = "USDT"


def fmt(x: float) -> str:
    """A float as Binance's decimal string: shortest round-tripping digits, never an exponent."""
    if x == 0.0:
        return "0"
    s = format(Decimal(repr(float(x))), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def num(v: Any) -> float:
    """A Binance decimal string (or number) as a float."""
    return float(v) if v not in (None, "") else 0.0
