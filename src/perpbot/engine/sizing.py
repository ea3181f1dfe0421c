"""Position sizing (SPEC §8.4 "Sizing" and §9 "dynamic margin ratio"), pure functions.

Why a separate module: sizing is the one piece of arithmetic that decides how much money is at
risk, so it is kept free of I/O and state and tested on its own. The bot supplies the balance,
the risk manager supplies the base balance, the exchange supplies the symbol's filters.

Margin ratio, like for like (SPEC §9). The design-point code evaluated the ratio on the *total*
balance and a later "fix" evaluated it on the per-symbol share against the *total* base, which
pins the ratio at MAX whenever N > 1. Here both sides are per-symbol shares::

    r = clamp(MAX − (B/N − base/N) · DECAY, MIN, MAX)

so the caller passes ``balance_share = B/N`` and ``base_share = base/N``. With N = 1 this is
exactly the SPEC's table (base 22 → r(22)=0.50, r(100)=0.4532, r(300)=0.3332, r(10000)=0.20,
r(5)=0.50). With N symbols the ratio reacts to the growth of one symbol's *share*, i.e. a
balance gain of ΔB lowers r by ΔB/N·DECAY: the decay is calibrated per share, which is what
"compare like with like" means once every bot sizes from its share.
"""

from __future__ import annotations

import math
from typing import Protocol

from perpbot.domain.types import SymbolFilters
from perpbot.exchange.filters import ceil_qty, floor_qty


class MarginParams(Protocol):
    """The three configuration values the ratio needs (``AppConfig`` satisfies this)."""

    @property
    def margin_max_ratio(self) -> float: ...

    @property
    def margin_min_ratio(self) -> float: ...

    @property
    def margin_decay_rate(self) -> float: ...


def margin_ratio(balance_share: float, base_share: float, cfg: MarginParams) -> float:
    """Dynamic margin ratio for one symbol's share of the balance (see the module docstring).

    ``base_share <= 0`` (base balance never set) is treated as "no growth yet": the share is
    compared with itself and the ratio is MAX. The runner sets the base once before any bot
    starts (SPEC §13 row 15), so this only matters for ad-hoc use.
    """
    hi, lo = cfg.margin_max_ratio, cfg.margin_min_ratio
    if base_share <= 0:
        return hi
    r = hi - (balance_share - base_share) * cfg.margin_decay_rate
    if r > hi:
        return hi
    if r < lo:
        return lo
    return r


def position_size(
    allocation: float, price: float, leverage: int, ratio: float, filters: SymbolFilters
) -> float:
    """Order quantity for one entry: ``notional = A·r·L``, floored to the step size.

    When the floored quantity's notional is below the symbol's minimum notional (or the quantity
    below ``min_qty``), the quantity is bumped to the *smallest* step multiple that clears both —
    never more (the design point added a fixed +0.05 that over-sized coins priced near 1).

    A zero or negative allocation still returns the minimum legal quantity, as SPEC §14 asks
    ("share 0 → qty > 0"): this function answers "what is the smallest order that implements this
    sizing"; whether a near-empty account should trade at all is a *policy* the bot applies (it
    skips when the allocation cannot pay the margin of that minimum order, see ``bot.py``).
    A non-positive or non-finite price returns 0.0 (nothing sensible can be sized).
    """
    if not (price > 0 and math.isfinite(price)):
        return 0.0
    step = filters.step_size
    notional = max(allocation, 0.0) * ratio * leverage
    qty = floor_qty(notional / price, step)
    if qty * price < filters.min_notional or qty < filters.min_qty:
        qty = max(ceil_qty(filters.min_notional / price, step), ceil_qty(filters.min_qty, step))
    if qty > filters.max_qty:
        qty = floor_qty(filters.max_qty, step)
    return qty
