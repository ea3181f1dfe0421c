"""The trade chart PNG's many-segment layers: its candles and its SL/TP levels.

Why their own line collections (issue 13, the charts after the run): on a date axis matplotlib
converts every segment of a collection through the axis' units at each draw, building a new
``Path`` per segment (~2,400 candle segments and a few hundred levels per chart: ~15-25 ms of a
~150 ms chart). Here the segments are given in the axis' own floats (dates as ``date2num``), on
which that conversion returns its input unchanged, so ``FloatSegments`` skips it: the same
pixels (tested against ``LineCollection`` and ``Axes.hlines``), without the per-draw copies.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from perpbot.backtest.charts import dt64

if TYPE_CHECKING:
    from matplotlib.collections import LineCollection

    from perpbot.backtest.candle_bars import Candles
    from perpbot.backtest.trade_chart import Level

UP, DOWN = "#26a69a", "#ef5350"
LEVEL_COLOURS = (("SL", "tab:red"), ("TP", "tab:green"))


@functools.cache
def float_segments() -> type[LineCollection]:
    """``LineCollection`` for segments already in the axes' float coordinates: it never asks the
    axes' units to convert them (built on first use: matplotlib is imported only to draw)."""
    from matplotlib.collections import LineCollection

    class FloatSegments(LineCollection):
        """Segments in the axes' floats (dates as ``date2num``): no unit conversion per draw."""

        def have_units(self) -> bool:
            return False

    return FloatSegments


def _segments(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray) -> np.ndarray:
    return np.stack([np.column_stack([x0, y0]), np.column_stack([x1, y1])], axis=1)


def draw_candles(ax: Any, c: Candles) -> None:
    """Wicks and bodies as two line collections (two artists, however many candles)."""
    from matplotlib.colors import to_rgba
    from matplotlib.dates import date2num

    x = date2num(dt64(c.open_time_ms))
    # RGBA rows, not colour names: the same colours, without one name lookup per candle.
    colours = np.where((c.close >= c.open)[:, None], np.array(to_rgba(UP)), np.array(to_rgba(DOWN)))
    lo, hi = np.minimum(c.open, c.close), np.maximum(c.open, c.close)
    width = 3.0 if x.size < 400 else 1.5
    segments = float_segments()
    ax.add_collection(segments(_segments(x, c.low, x, c.high), colors=colours, linewidths=0.6))
    ax.add_collection(segments(_segments(x, lo, x, hi), colors=colours, linewidths=width))
    ax.xaxis_date()
    ax.autoscale_view()


def draw_levels(ax: Any, levels: Sequence[Level]) -> None:
    """The resting SL and TP trigger prices as dashed horizontal segments, one collection per
    kind, as ``ax.hlines`` draws them (same data limits, style and legend entry)."""
    from matplotlib.dates import date2num

    for kind, colour in LEVEL_COLOURS:
        mine = [lv for lv in levels if lv.kind == kind]
        if not mine:
            continue
        ax.xaxis_date()  # a no-op after the candles; a date axis even without them
        x0 = date2num(dt64([lv.start_ms for lv in mine]))
        x1 = date2num(dt64([lv.end_ms for lv in mine]))
        y = np.array([lv.price for lv in mine], dtype=np.float64)
        segments = _segments(x0, y, x1, y)
        ax.add_collection(
            float_segments()(
                segments, colors=colour, linestyles="dashed", linewidths=1.0, label=f"{kind} level"
            )
        )
