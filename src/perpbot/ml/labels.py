"""Triple-barrier labels (SPEC §5): did a trade opened at this bar's close reach TP before SL?

One rule everywhere (SPEC §5 asks to pick one): the trade is entered at ``close_i`` with
``sl = close_i ∓ ATR_SL_MULT·atr_i`` and ``tp = close_i ± ATR_TP_MULT·atr_i``; bars ``i+1 …
i+lookahead`` are walked in order; inside a bar the stop is tested **before** the target
(pessimistic: a 15-minute bar does not tell which extreme came first, and assuming the good one
would inflate every label). A trade that hits neither barrier is a *timeout* and counts as a
failure (label 0), because the bot's capital was tied up for six hours without reaching its
target.

The multiples are never constants here: callers pass the ``SignalParams`` the bot trades with
(SPEC §13 row 22 — at the design point labels used 1.5/2.0 while the bot traded 1.5/3.0, so
the model learned a different question from the one it was asked).

``barrier_outcome`` is the readable per-trade reference; ``barrier_labels`` is the vectorised
version used for datasets (tests check that both agree).
"""

from __future__ import annotations

import enum

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LOOKAHEAD = 24  # bars (6 h of 15-minute candles)


class Outcome(enum.Enum):
    """How a barrier trade ended."""

    TP = "tp"
    SL = "sl"
    TIMEOUT = "timeout"

    @property
    def label(self) -> int:
        """Training label: only a take-profit is a success; timeout counts as failure."""
        return 1 if self is Outcome.TP else 0


def _side_sign(side: int | str) -> int:
    """Accept the signal convention (1 / -1), the feature convention (1.0 LONG / 0.0 SHORT is
    ambiguous with HOLD, so 0 is refused) and the words LONG/SHORT."""
    if isinstance(side, str):
        word = side.strip().upper()
        if word in ("LONG", "BUY"):
            return 1
        if word in ("SHORT", "SELL"):
            return -1
        raise ValueError(f"side={side!r}: expected LONG or SHORT")
    if side > 0:
        return 1
    if side < 0:
        return -1
    raise ValueError("side=0: HOLD is not a trade direction")


def barrier_outcome(
    entry: float,
    sl: float,
    tp: float,
    side: int | str,
    highs: np.ndarray | list[float],
    lows: np.ndarray | list[float],
) -> Outcome:
    """Walk the future bars in order and report which barrier was touched first.

    ``highs``/``lows`` are the bars *after* the entry bar (the caller decides how many: the
    lookahead). Inside one bar SL is checked first. ``entry`` is accepted for symmetry with the
    trade record and sanity-checked against the barriers, since a stop on the wrong side of the
    entry is always a caller bug.
    """
    sign = _side_sign(side)
    if sign > 0 and not (sl < entry < tp):
        raise ValueError(f"LONG needs sl < entry < tp, got sl={sl}, entry={entry}, tp={tp}")
    if sign < 0 and not (tp < entry < sl):
        raise ValueError(f"SHORT needs tp < entry < sl, got tp={tp}, entry={entry}, sl={sl}")
    for high, low in zip(highs, lows, strict=True):
        if sign > 0:
            if low <= sl:
                return Outcome.SL
            if high >= tp:
                return Outcome.TP
        else:
            if high >= sl:
                return Outcome.SL
            if low <= tp:
                return Outcome.TP
    return Outcome.TIMEOUT


def barrier_labels(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    atr: np.ndarray,
    sides: np.ndarray,
    sl_mult: float,
    tp_mult: float,
    lookahead: int = LOOKAHEAD,
) -> np.ndarray:
    """Vectorised labels for every bar: 1.0 (TP first), 0.0 (SL first or timeout), NaN otherwise.

    ``sides`` uses the signal convention (1 LONG, -1 SHORT, 0 = no trade → NaN). A row is also NaN
    when its ATR is NaN or ≤ 0 (no meaningful barrier), its close is not finite, or fewer than
    ``lookahead`` bars follow it (the outcome is not known yet — labelling it 0 would teach the
    model that the most recent signals failed).

    Cost: one ``[n, lookahead]`` view per price series and a first-hit search with ``argmax``;
    about 2 ms for 40k bars × 24.
    """
    if sl_mult <= 0 or tp_mult <= 0:
        raise ValueError(f"barrier multiples must be > 0, got sl_mult={sl_mult}, tp_mult={tp_mult}")
    if lookahead < 1:
        raise ValueError(f"lookahead must be >= 1, got {lookahead}")
    high = np.asarray(high, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    atr = np.asarray(atr, dtype=np.float64)
    sides = np.asarray(sides)
    n = close.shape[0]
    if not (high.shape == low.shape == atr.shape == sides.shape == (n,)):
        raise ValueError("high, low, close, atr and sides must be 1-D arrays of the same length")

    out = np.full(n, np.nan, dtype=np.float64)
    m = n - lookahead  # rows 0 … m-1 have a full future window
    if m <= 0:
        return out

    sign = np.sign(sides[:m]).astype(np.int8)
    a = atr[:m]
    entry = close[:m]
    valid = (sign != 0) & np.isfinite(a) & (a > 0) & np.isfinite(entry)
    rows = np.flatnonzero(valid)
    if rows.size == 0:
        return out

    # Future window of row i = bars i+1 … i+lookahead  ->  window view starting at i+1.
    fut_h = sliding_window_view(high[1:], lookahead)[rows]
    fut_l = sliding_window_view(low[1:], lookahead)[rows]
    s = sign[rows].astype(np.float64)
    e = entry[rows]
    sl = e - s * sl_mult * a[rows]
    tp = e + s * tp_mult * a[rows]
    is_long = (s > 0)[:, None]
    sl_hit = np.where(is_long, fut_l <= sl[:, None], fut_h >= sl[:, None])
    tp_hit = np.where(is_long, fut_h >= tp[:, None], fut_l <= tp[:, None])

    never = lookahead  # sentinel index beyond the window
    first_sl = np.where(sl_hit.any(axis=1), sl_hit.argmax(axis=1), never)
    first_tp = np.where(tp_hit.any(axis=1), tp_hit.argmax(axis=1), never)
    # TP wins only when strictly earlier than SL: a bar touching both counts as SL.
    out[rows] = (first_tp < first_sl).astype(np.float64)
    return out
