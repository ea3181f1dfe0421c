"""Position arithmetic: how one execution changes a symbol's position, isolated margin and
liquidation price.

Model (Binance's, as the simulated account applies it)
------------------------------------------------------
* One-way position mode, one position per symbol, USDT wallet. Every position is margined as
  **isolated** (the bot always sets ISOLATED, SPEC §13 row 19); ``set_margin_type`` is tracked
  for reporting and for Binance's -4046 answer, but a CROSSED symbol is margined the same way.
* An entry moves ``qty·price/leverage`` into the position's isolated wallet ``iw``; a reduction
  releases ``iw`` pro rata; realised PnL and commissions go to the wallet (the caller's job:
  these functions only change the book).
* Liquidation price (Binance isolated formula, one bracket, maintenance amount 0)::

      long : LP = (q·EP − iw) / (q·(1 − mmr))        short: LP = (q·EP + iw) / (q·(1 + mmr))

Separate from the clearing of executions because this is the arithmetic a reviewer checks
against Binance's formulas, free of events and records; every function here is a pure update
of one ``Book``.
"""

from __future__ import annotations

from perpbot.exchange.filters import snap
from perpbot.exchange.sim.book import Book


def snap_qty(b: Book, q: float) -> float:
    """Remove float drift from a position amount (it is always a whole number of steps)."""
    return snap(q, b.filters.step_size) if q != 0.0 else 0.0


def apply_fill(b: Book, sgn: int, q: float, price: float, mmr: float) -> float:
    """Update position, isolated margin and liquidation price for one execution of ``q`` at
    ``price`` by a taker of sign ``sgn`` (+1 buy); returns the realised PnL."""
    pos = b.qty
    rp = 0.0
    if pos == 0.0 or (pos > 0) == (sgn > 0):
        a = abs(pos)
        b.entry = (a * b.entry + q * price) / (a + q)
        b.iw += q * price / b.leverage
        b.qty = snap_qty(b, pos + sgn * q)
    else:
        a = abs(pos)
        close = min(q, a)
        rp = (price - b.entry) * close * (1.0 if pos > 0 else -1.0)
        remaining = snap_qty(b, a - close)
        if remaining == 0.0:
            b.qty, b.entry, b.iw = 0.0, 0.0, 0.0
        else:
            b.iw -= b.iw * close / a
            b.qty = remaining if pos > 0 else -remaining
        opened = snap_qty(b, q - close)
        if opened > 0.0:
            b.qty = sgn * opened
            b.entry = price
            b.iw = opened * price / b.leverage
    recompute_liq(b, mmr)
    return rp


def recompute_liq(b: Book, mmr: float) -> None:
    """The liquidation price of ``b``'s position (0 when flat or when a long cannot go that low)."""
    q = abs(b.qty)
    if q == 0.0:
        b.liq = 0.0
        return
    if b.qty > 0:
        lp = (q * b.entry - b.iw) / (q * (1.0 - mmr))
        b.liq = lp if lp > 0.0 else 0.0
    else:
        b.liq = (q * b.entry + b.iw) / (q * (1.0 + mmr))
