"""The rule-based entry signal of SPEC §3, vectorised over every row, and the ATR stops.

Why one vectorised function for everything: the design point had a live evaluator (LONG checked
first) and a vectorised trainer ("both qualify" → HOLD) that disagreed. Here the live bot, the
backtester and the dataset builder all call :func:`rule_signal`; the live bot simply reads the last
row (:func:`last_signal` evaluates only the last two rows with the very same code).

Row ``t`` reads rows ``t`` and ``t-1`` only (the MACD cross), so the signal never looks ahead.
Every comparison with a NaN is false (NumPy semantics), so warm-up rows score 0 and stay HOLD.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from perpbot.config import SignalParams
from perpbot.domain.types import Side

LONG, SHORT, HOLD = 1, -1, 0

# Thresholds of the scoring table (SPEC §3); fixed by the design, not configurable.
RSI_OVERSOLD, RSI_OVERBOUGHT = 35.0, 65.0
STOCH_LOW, STOCH_HIGH = 20.0, 80.0
MACD_CROSS_POINTS = 2
# K and D closer than this (Stochastic RSI points, 0–100 scale) are equal. Both are means of three
# values on a 0–100 scale, so float rounding leaves at most ~1e-13 between two numbers that are
# equal in SPEC §3's arithmetic (e.g. K = D = 100 while the RSI keeps making 14-bar highs); a real
# difference is many orders larger. Without it the K-vs-D point was decided by rounding noise
# (issue 11: spurious SHORTs on XRPUSDT 2025-06-08 06:15 and AVAXUSDT 2026-03-13 13:15).
STOCH_TIE_TOL = 1e-9


class HoldReason(enum.IntEnum):
    """Why a row is HOLD (diagnostics log, SPEC §3 "later"); ``NONE`` on LONG/SHORT rows."""

    NONE = 0
    NO_SCORE = 1  # neither side reached SIGNAL_THRESHOLD
    NO_VOLUME = 2  # a side reached the threshold but not the strong score, and no volume surge
    BOTH_SIDES = 3  # both sides qualified: ambiguous, so HOLD (SPEC §3 unification)
    ADX_GATE = 4  # a side qualified but ADX < ADX_THRESHOLD


@dataclass(frozen=True, slots=True)
class SignalFrame:
    """Per-row result of the rule signal; all arrays have the input's length.

    ``long_score``/``short_score`` are the table points *without* the volume term (SPEC §4
    feature 12); ``hold_reason`` holds :class:`HoldReason` codes.
    """

    signal: np.ndarray  # int8 in {1 LONG, -1 SHORT, 0 HOLD}
    long_score: np.ndarray  # int8
    short_score: np.ndarray  # int8
    vol_surge: np.ndarray  # bool
    hold_reason: np.ndarray  # int8 HoldReason codes

    def __len__(self) -> int:
        return int(self.signal.shape[0])

    def side_at(self, i: int) -> Side | None:
        """The signal of row ``i`` as a :class:`Side` (None = HOLD); ``-1`` is the last row."""
        return side_from_code(int(self.signal[i]))


def side_from_code(code: int) -> Side | None:
    """Map the int8 signal code to a :class:`Side` (0 → None)."""
    if code == LONG:
        return Side.LONG
    if code == SHORT:
        return Side.SHORT
    return None


def _prev(x: np.ndarray) -> np.ndarray:
    """Row ``t-1`` aligned on row ``t`` (NaN before the first row, so the first row never crosses)."""
    out = np.empty_like(x)
    out[:1] = np.nan
    out[1:] = x[:-1]
    return out


def _scores(ind: Mapping[str, np.ndarray], close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Long and short points of the SPEC §3 table (no volume term). NaN comparisons are false."""
    rsi, k, d = ind["rsi"], ind["stoch_k"], ind["stoch_d"]
    macd, sig = ind["macd"], ind["macd_signal"]
    pmacd, psig = _prev(macd), _prev(sig)
    e9, e21, e50 = ind["ema9"], ind["ema21"], ind["ema50"]
    with np.errstate(invalid="ignore"):
        k_above_d = (k - d) > STOCH_TIE_TOL  # a tie (within rounding) is neither above nor below
        k_below_d = (d - k) > STOCH_TIE_TOL
        long_pts = (
            (rsi < RSI_OVERSOLD).astype(np.int8)
            + MACD_CROSS_POINTS * ((pmacd < psig) & (macd > sig))
            + (close < ind["bb_lower"])
            + ((e9 > e21) & (e21 > e50))
            + ((k < STOCH_LOW) & k_above_d)
        )
        short_pts = (
            (rsi > RSI_OVERBOUGHT).astype(np.int8)
            + MACD_CROSS_POINTS * ((pmacd > psig) & (macd < sig))
            + (close > ind["bb_upper"])
            + ((e9 < e21) & (e21 < e50))
            + ((k > STOCH_HIGH) & k_below_d)
        )
    return long_pts.astype(np.int8), short_pts.astype(np.int8)


def rule_signal(
    ind: Mapping[str, np.ndarray],
    close: ArrayLike,
    volume: ArrayLike,
    params: SignalParams,
) -> SignalFrame:
    """SPEC §3 on every row: score, volume/strength clause, "both sides" → HOLD, then the ADX gate.

    A side qualifies when its score ≥ ``signal_threshold`` and (volume surge or score ≥ threshold+1);
    the surge clause is an OR, so a strong score passes without volume. ``adx_threshold`` 0 disables
    the gate; a NaN ADX never blocks (the gate needs evidence of a weak trend, not its absence).
    """
    c = np.asarray(close, dtype=np.float64)
    v = np.asarray(volume, dtype=np.float64)
    long_pts, short_pts = _scores(ind, c)
    with np.errstate(invalid="ignore"):
        vol_surge = v > params.vol_multiplier * ind["vol_ma20"]
        adx = ind["adx"]
        weak_trend = (adx < params.adx_threshold) if params.adx_threshold > 0 else np.zeros(len(c), bool)
    thr = int(params.signal_threshold)
    long_reach, short_reach = long_pts >= thr, short_pts >= thr
    long_ok = long_reach & (vol_surge | (long_pts >= thr + 1))
    short_ok = short_reach & (vol_surge | (short_pts >= thr + 1))
    both = long_ok & short_ok
    candidate = np.where(long_ok, LONG, np.where(short_ok, SHORT, HOLD)).astype(np.int8)
    candidate[both] = HOLD
    gated = (candidate != HOLD) & weak_trend
    signal = np.where(gated, HOLD, candidate).astype(np.int8)

    reason = np.full(len(c), HoldReason.NO_SCORE, dtype=np.int8)
    reason[(long_reach | short_reach) & ~(long_ok | short_ok)] = HoldReason.NO_VOLUME
    reason[both] = HoldReason.BOTH_SIDES
    reason[gated] = HoldReason.ADX_GATE
    reason[signal != HOLD] = HoldReason.NONE
    return SignalFrame(signal, long_pts, short_pts, np.asarray(vol_surge, dtype=bool), reason)


def last_signal(
    ind: Mapping[str, np.ndarray],
    close: ArrayLike,
    volume: ArrayLike,
    params: SignalParams,
) -> SignalFrame:
    """The last row only (length-1 frame), through :func:`rule_signal` on the last two rows.

    Cheap for a live diagnostics path; identical to ``rule_signal(...)`` at the last row because a
    row depends on itself and the previous row only.
    """
    tail = {k: np.asarray(a, dtype=np.float64)[-2:] for k, a in ind.items()}
    sf = rule_signal(tail, np.asarray(close)[-2:], np.asarray(volume)[-2:], params)
    return SignalFrame(
        *(a[-1:] for a in (sf.signal, sf.long_score, sf.short_score, sf.vol_surge, sf.hold_reason))
    )


def atr_stops(entry: float, atr: float, side: Side, params: SignalParams) -> tuple[float, float]:
    """Stop-loss and take-profit trigger prices from the entry reference and ATR (SPEC §3).

    LONG: ``sl = E − ATR_SL_MULT·A``, ``tp = E + ATR_TP_MULT·A``; SHORT mirrored. Rounding to the
    symbol's tick size belongs to the exchange layer, not here. Works element-wise on arrays too
    (the label builder uses the same multiples, SPEC §13 row 22).
    """
    sign = side.sign
    return entry - sign * params.atr_sl_mult * atr, entry + sign * params.atr_tp_mult * atr
