"""Feature rows as the bot's ``CandleContext`` (backtest: a whole frame; live: one row).

Why apart from the feature code: the backtest converts a frame once and builds ~10^5 contexts from
plain arrays; none of that needs the indicator code. ``ml.features`` re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from perpbot.engine.context import CandleContext
from perpbot.ml.feature_names import FEATURE_COLS, FRAME_COLS
from perpbot.strategy.signal import side_from_code

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, slots=True)
class FrameIndex:
    """Column positions of a feature frame, resolved once per frame (context_from_row is hot)."""

    features: slice | np.ndarray
    close: int
    atr: int
    signal: int
    long_score: int
    short_score: int
    rsi: int
    macd_hist: int
    adx_raw: int
    vol_surge: int

    @classmethod
    def from_columns(cls, columns: pd.Index | list[str] | tuple[str, ...]) -> FrameIndex:
        pos = {name: i for i, name in enumerate(columns)}
        missing = [c for c in FRAME_COLS if c not in pos]
        if missing:
            raise ValueError(f"not a feature frame: missing columns {missing}")
        feat = np.array([pos[c] for c in FEATURE_COLS])
        contiguous = bool(np.all(np.diff(feat) == 1))
        return cls(
            features=slice(int(feat[0]), int(feat[-1]) + 1) if contiguous else feat,
            close=pos["close"],
            atr=pos["atr"],
            signal=pos["signal"],
            long_score=pos["long_score"],
            short_score=pos["short_score"],
            rsi=pos["rsi"],
            macd_hist=pos["macd_hist"],
            adx_raw=pos["adx_raw"],
            vol_surge=pos["vol_surge"],
        )


@dataclass(frozen=True, slots=True)
class FrameArrays:
    """A feature frame as plain arrays for fast iteration (backtester: ~10^5 contexts)."""

    values: np.ndarray  # (n, len(columns)) float64
    open_time_ms: np.ndarray  # (n,) int64
    index: FrameIndex


def contexts_arrays(frame: pd.DataFrame) -> FrameArrays:
    """Convert a feature frame (DatetimeIndex of open times) once; then call ``context_from_row``."""
    import pandas as pd

    if not isinstance(frame.index, pd.DatetimeIndex):
        raise ValueError("feature frame needs a DatetimeIndex of candle open times")
    return FrameArrays(
        values=np.ascontiguousarray(frame.to_numpy(dtype=np.float64)),
        open_time_ms=frame.index.as_unit("ms").asi8.astype(np.int64),
        index=FrameIndex.from_columns(frame.columns),
    )


def context_from_row(symbol: str, open_time_ms: int, values: np.ndarray, index: FrameIndex) -> CandleContext:
    """Build the bot's :class:`CandleContext` from one float64 row of a feature frame.

    ``features`` is a copy of the 26 values (the frame stays immutable to the bot); the
    side-dependent ``signal_strength``/``side`` are re-filled per proposed side by
    ``CandleContext.features_for``.
    """
    return CandleContext(
        symbol=symbol,
        open_time_ms=int(open_time_ms),
        close=float(values[index.close]),
        atr=float(values[index.atr]),
        signal=side_from_code(int(values[index.signal])),
        long_score=int(values[index.long_score]),
        short_score=int(values[index.short_score]),
        rsi=float(values[index.rsi]),
        macd_hist=float(values[index.macd_hist]),
        adx=float(values[index.adx_raw]),
        vol_surge=bool(values[index.vol_surge]),
        features=values[index.features].copy(),
    )


def iter_contexts(symbol: str, frame: pd.DataFrame) -> Iterator[CandleContext]:
    """Every row of a feature frame as a context, in time order."""
    arrays = contexts_arrays(frame)
    for i in range(arrays.values.shape[0]):
        yield context_from_row(symbol, int(arrays.open_time_ms[i]), arrays.values[i], arrays.index)
