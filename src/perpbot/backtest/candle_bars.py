"""One symbol's candles over a run's window, and their merging into the bars a PNG draws.

Why apart from ``trade_chart``: the backtest hands a run's candles to the chart worker before
its loop starts (``ChartPool.send_ahead``); this module needs numpy alone, so that the run does
not import the chart modules before its first candle (issue 13).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

PNG_CANDLES = 1_200
"""Bars at most in a trades-on-price PNG (``aggregate``): about one per horizontal pixel."""


@dataclass(frozen=True, slots=True)
class Candles:
    """One symbol's candles over the run's window (open times in ms, UTC)."""

    open_time_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    def columns(self) -> tuple[np.ndarray, ...]:
        """The arrays in ``CANDLE_FIELDS`` order: ``Candles(*c.columns())`` is ``c`` again. The one
        place that lists them for what sends, compares or rebuilds candles."""
        return (self.open_time_ms, self.open, self.high, self.low, self.close)


CANDLE_FIELDS = tuple(f.name for f in fields(Candles))
"""The names of ``Candles.columns()``, in order (keys of the arrays sent to a chart worker)."""


def aggregate(c: Candles, buckets: int) -> Candles:
    """Candles merged into at most ``buckets`` bars (first open, max high, min low, last close)."""
    n = c.open_time_ms.size
    if n <= buckets:
        return c
    size = -(-n // buckets)
    starts = np.arange(0, n, size)
    ends = np.minimum(starts + size, n) - 1
    return Candles(
        c.open_time_ms[starts],
        c.open[starts],
        np.maximum.reduceat(c.high, starts),
        np.minimum.reduceat(c.low, starts),
        c.close[ends],
    )
