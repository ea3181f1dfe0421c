"""The report PNGs' figures and axes, built ahead while the chart worker waits for its jobs.

Why (issue 13, the charts after the run): a figure, its axes and their tick objects cost the same
whatever the chart shows (measured: ~12 ms for a trade chart's one axes, ~40 ms for the equity
chart's three shared-x axes), and the chart worker sits idle on the second core while the
parent runs the backtest loop. So it builds them then (``build_ahead``, stoppable between two
figures), and after the run each chart takes one (``take``) and only draws its data into it.

Same pixels: a figure built ahead is made by the very function a chart would call (``LAYOUTS``),
and its extra tick objects are the ones matplotlib creates during a first draw, from the same
settings (every later setting, e.g. the grid, is applied to existing ticks as to new ones;
tested against freshly built figures). A chart with no figure waiting builds its own.

The trade charts' candles are known before the loop (the run's window): the parent sends them
then (``ChartPool.send_ahead``) and the worker draws them into trade figures too
(``build_candles_ahead``). A trade chart takes such a figure only when its candles are exactly
those (``take_trades``), so what it draws never depends on what was sent ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from perpbot.backtest.charts import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from perpbot.backtest.candle_bars import Candles

TICKS_AHEAD = 12
"""Major tick objects built ahead per axis (the report's axes use 6-11)."""


def equity_layout() -> tuple[Figure, Any]:
    """The equity PNG: equity, per-symbol PnL and drawdown axes sharing their time axis."""
    fig = new_figure(12, 8)
    return fig, fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.5]})


def trade_layout() -> tuple[Figure, Any]:
    """A trades-on-price PNG: one axes."""
    fig = new_figure(14, 7)
    return fig, fig.subplots()


LAYOUTS: dict[str, Callable[[], tuple[Figure, Any]]] = {"equity": equity_layout, "trades": trade_layout}
_built: dict[str, list[tuple[Figure, Any]]] = {}
_with_candles: list[tuple[Candles, Figure, Any]] = []  # trade figures, their candles drawn


def take(layout: str) -> tuple[Figure, Any]:
    """A figure and its axes of ``layout``: one built ahead if any is left, else a new one."""
    waiting = _built.get(layout)
    return waiting.pop() if waiting else LAYOUTS[layout]()


def build_ahead(layouts: Sequence[str], stop: Callable[[], bool] = lambda: False) -> int:
    """Build one figure per entry of ``layouts`` (with its tick objects) until ``stop()``;
    returns how many were built."""
    built = 0
    for layout in layouts:
        if stop():
            break
        fig, axes = LAYOUTS[layout]()
        for ax in fig.axes:
            ax.xaxis.get_major_ticks(TICKS_AHEAD)
            ax.yaxis.get_major_ticks(TICKS_AHEAD)
        _built.setdefault(layout, []).append((fig, axes))
        built += 1
    return built


def build_candles_ahead(candles: Mapping[str, Candles], stop: Callable[[], bool] = lambda: False) -> int:
    """A trade figure per symbol with ``candles`` (merged as the PNG draws them) already drawn,
    until ``stop()``; returns how many were built."""
    from perpbot.backtest.trade_png_layers import draw_candles

    built = 0
    for c in candles.values():
        if stop():
            break
        if c.open_time_ms.size:
            fig, ax = take("trades")
            draw_candles(ax, c)
            _with_candles.append((c, fig, ax))
            built += 1
    return built


def _same(a: Candles, b: Candles) -> bool:
    pairs = zip(a.columns(), b.columns(), strict=True)
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in pairs)


def take_trades(candles: Candles) -> tuple[Figure, Any, bool]:
    """A trade figure and its axes, and whether ``candles`` are already drawn in it (only when a
    figure was built ahead on exactly these candles)."""
    for i, (c, fig, ax) in enumerate(_with_candles):
        if _same(c, candles):
            del _with_candles[i]
            return fig, ax, True
    fig, ax = take("trades")
    return fig, ax, False


def discard() -> None:
    """Forget every figure built ahead (tests: each starts from none)."""
    _built.clear()
    _with_candles.clear()
