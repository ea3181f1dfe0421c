"""What a bot sees at each closed primary candle, whatever the mode.

The backtester builds contexts from the batch feature frame (features computed once); live and
paper build them from the last ``LIVE_WINDOW_BARS`` candles with the very same feature function.
The bot therefore never knows where prices come from (principle 1) and never computes features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perpbot.domain.types import Side


@dataclass(slots=True)
class CandleContext:
    symbol: str
    open_time_ms: int  # candle open time; the candle is closed when the bot sees it
    close: float
    atr: float  # raw ATR(14) of the closed candle (stop distances)
    signal: Side | None  # rule signal after ADX gate / threshold; None = HOLD
    long_score: int  # rule points for LONG (no volume term), SPEC §4 feature 12
    short_score: int
    rsi: float
    macd_hist: float
    adx: float
    vol_surge: bool
    # The 26 model inputs in FEATURE_COLS order with signal_strength/side left for ``features_for``.
    features: np.ndarray

    def features_for(self, side: Side) -> np.ndarray:
        """The model input for a proposed ``side``: the two side-dependent columns filled in."""
        from perpbot.ml.features import SIDE_INDEX, SIGNAL_STRENGTH_INDEX

        row = self.features.copy()
        row[SIGNAL_STRENGTH_INDEX] = float(self.long_score if side is Side.LONG else self.short_score)
        row[SIDE_INDEX] = 1.0 if side is Side.LONG else 0.0
        return row
