"""The trade chart's candle and level layers: matplotlib's own pixels, without per-draw copies."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from perpbot.backtest.candle_bars import Candles
from perpbot.backtest.charts import dt64, new_figure
from perpbot.backtest.trade_chart import Level
from perpbot.backtest.trade_png_layers import draw_candles, draw_levels

BAR = 900_000


def _candles(n: int) -> Candles:
    rng = np.random.default_rng(7)
    close = 1 + np.cumsum(rng.normal(0, 0.01, n))
    t = 1_700_000_000_000 + BAR * np.arange(n, dtype=np.int64)
    return Candles(t, np.roll(close, 1), close + 0.02, close - 0.02, close)


def _levels(c: Candles) -> list[Level]:
    t = c.open_time_ms
    return [
        Level("SL", int(t[10]), int(t[40]), 0.9),
        Level("TP", int(t[10]), int(t[40]), 1.25),
        Level("SL", int(t[50]), int(t[-1]), 1.1),
    ]


def _pixels(fig) -> np.ndarray:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGBA"))


def _plain_matplotlib(c: Candles, levels: list[Level]):  # type: ignore[no-untyped-def]
    """The same chart with ``LineCollection`` and ``Axes.hlines`` on datetimes, as documented."""
    from matplotlib.collections import LineCollection
    from matplotlib.dates import date2num

    fig = new_figure(7, 4)
    ax = fig.subplots()
    if c.open_time_ms.size:
        x = date2num(dt64(c.open_time_ms))
        colours = np.where(c.close >= c.open, "#26a69a", "#ef5350")
        lo, hi = np.minimum(c.open, c.close), np.maximum(c.open, c.close)
        wicks = np.stack([np.column_stack([x, c.low]), np.column_stack([x, c.high])], axis=1)
        bodies = np.stack([np.column_stack([x, lo]), np.column_stack([x, hi])], axis=1)
        ax.add_collection(LineCollection(wicks, colors=colours, linewidths=0.6))
        ax.add_collection(LineCollection(bodies, colors=colours, linewidths=3.0 if x.size < 400 else 1.5))
        ax.xaxis_date()
        ax.autoscale_view()
    for kind, colour in (("SL", "tab:red"), ("TP", "tab:green")):
        mine = [lv for lv in levels if lv.kind == kind]
        if mine:
            start, end = dt64([lv.start_ms for lv in mine]), dt64([lv.end_ms for lv in mine])
            ax.hlines(
                [lv.price for lv in mine],
                start,
                end,
                colors=colour,
                linestyles="dashed",
                lw=1.0,
                label=f"{kind} level",
            )
    if levels:
        ax.legend(loc="upper left")
    return fig


def _ours(c: Candles, levels: list[Level]):  # type: ignore[no-untyped-def]
    fig = new_figure(7, 4)
    ax = fig.subplots()
    if c.open_time_ms.size:
        draw_candles(ax, c)
    draw_levels(ax, levels)
    if levels:
        ax.legend(loc="upper left")
    return fig


@pytest.mark.parametrize(("n", "with_levels"), [(1_200, True), (300, True), (1_200, False), (0, True)])
def test_same_pixels_and_limits_as_plain_matplotlib(n: int, with_levels: bool) -> None:
    c = _candles(max(n, 60))
    if n == 0:  # levels alone (no candle): still a date axis
        c = Candles(*(a[:0] for a in (c.open_time_ms, c.open, c.high, c.low, c.close)))
    levels = _levels(_candles(60)) if with_levels else []
    ours, plain = _ours(c, levels), _plain_matplotlib(c, levels)
    assert np.array_equal(_pixels(ours), _pixels(plain))
    assert np.array_equal(ours.axes[0].get_xlim(), plain.axes[0].get_xlim())
    assert np.array_equal(ours.axes[0].get_ylim(), plain.axes[0].get_ylim())
    if with_levels:
        assert [t.get_text() for t in ours.axes[0].get_legend().get_texts()] == ["SL level", "TP level"]


def test_a_draw_makes_no_path_per_candle(monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.path as mpath

    fig = _ours(_candles(1_200), [])
    fig.canvas.draw()  # first draw: ticks, fonts
    made = 0
    init = mpath.Path.__init__

    def counting(self, *a, **k):  # type: ignore[no-untyped-def]
        nonlocal made
        made += 1
        init(self, *a, **k)

    monkeypatch.setattr(mpath.Path, "__init__", counting)
    fig.canvas.draw()
    assert made < 300  # ticks and text; a unit conversion per segment would make ~2,400
