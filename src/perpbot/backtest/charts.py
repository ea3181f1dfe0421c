"""The equity charts of a backtest report (PNG and offline HTML) and the plotting helpers that the
other report charts share.

Speed (issue 13: both equity charts in ≤ 0.3 s for a year of 15-minute equity): every curve is
drawn from its min/max-decimated series (``perpbot.backtest.decimate``), so the picture keeps
every peak and trough; the PNG uses fixed margins instead of matplotlib's tight layout (which
draws every tick label twice to measure it); the HTML page is assembled as a plain plotly
figure dictionary and serialised without plotly's per-property validation (the structure is
fixed here and covered by tests), which is where most of plotly's time went.

PNG: object-oriented Agg canvas, no global backend switch, so importing this module never
changes a user's matplotlib state. HTML: plotly.js inlined, so the page opens offline.
"""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from perpbot.backtest.decimate import minmax_index

if TYPE_CHECKING:  # the chart worker draws from plain arrays: it never needs the metrics module
    from matplotlib.figure import Figure

    from perpbot.backtest.metrics import EquityCurve, MetricsReport

BUCKETS = 2_000
"""Decimation buckets per curve: about two per horizontal pixel of a 1200-pixel-wide chart."""

UNPROVEN = "Profitability is unproven (SPEC §13)."

Marker = tuple[int, str]
"""(time in ms, label): an event drawn as a vertical line on the charts (e.g. a kill-switch trip)."""


def dt64(ms: np.ndarray | Sequence[int]) -> np.ndarray:
    """Epoch milliseconds (UTC) as ``datetime64[ms]``: matplotlib and plotly both take them whole."""
    return np.asarray(ms, dtype=np.int64).astype("datetime64[ms]")


def decimated(
    time_ms: np.ndarray, values: np.ndarray, buckets: int = BUCKETS
) -> tuple[np.ndarray, np.ndarray]:
    """(times as datetime64, values) of the min/max-decimated curve."""
    s = decimated_series(time_ms, values, buckets)
    return dt64(s.time_ms), s.values


def drawdown_pct(curve: EquityCurve) -> np.ndarray:
    """Drawdown as a negative percentage of the running peak (0 at a new high)."""
    peak = np.maximum.accumulate(curve.equity) if curve.equity.size else curve.equity
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, -curve.drawdown / peak * 100.0, 0.0)


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


@functools.cache
def load_matplotlib() -> None:
    """Import matplotlib's ``Figure`` and Agg canvas, skipping the docstrings of its artists' ``set``.

    Why (issue 13, the chart worker's start): while ``matplotlib.figure`` loads, each of its ~100
    artist classes gets a ``set()`` whose docstring lists every property, built by
    ``matplotlib.artist.kwdoc`` from every setter's docstring: ~0.1 s of a ~0.45 s import, for text
    nobody reads in a process that draws. ``kwdoc`` returns an empty text only while these modules
    load (restored after); it only ever writes docstrings, so what is drawn is the same, byte for
    byte (``tests/backtest/test_charts.py``)."""
    import matplotlib.artist as artist

    kwdoc = artist.kwdoc
    artist.kwdoc = lambda _artist: ""
    try:
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401
    finally:
        artist.kwdoc = kwdoc


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure on its own Agg canvas (no pyplot, no global state)."""
    load_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNG files: the fastest one that compresses (PNG is lossless, so every level
gives the same pixels; level 6 would make files ~15 % smaller for ~2-3x the zlib time, issue 13)."""


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes: drawn by ``savefig`` (raw RGBA pixels, at its dpi), encoded by
    ``png_file`` (one row filter instead of Pillow's per-row search: ~10 ms instead of ~25 ms
    for a 1200x800 chart, issue 13)."""
    import matplotlib

    from perpbot.backtest.png_file import encode_png

    buf = io.BytesIO()
    fig.savefig(buf, format="rgba")
    drawn = fig.canvas.renderer  # the one savefig drew with (its size and dpi; not a new one)
    w, h = int(drawn.width), int(drawn.height)
    pixels = np.frombuffer(buf.getbuffer(), dtype=np.uint8).reshape(h, w, 4)
    software = f"Matplotlib version{matplotlib.__version__}, https://matplotlib.org/"
    return encode_png(pixels, drawn.dpi, {"Software": software}, PNG_COMPRESS_LEVEL)


def draw_markers_png(axes: Sequence[Any], markers: Sequence[Marker]) -> None:
    """Dashed vertical lines on every axis, labelled on the first one."""
    for ms, label in markers:
        when = np.datetime64(int(ms), "ms")
        for ax in axes:
            ax.axvline(when, color="grey", ls="--", lw=0.7)
        axes[0].annotate(
            label,
            (when, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color="grey",
        )


@functools.cache
def _template(name: str) -> dict[str, Any]:
    """plotly's named template as the plain JSON a page embeds.

    Why from its file (issue 13, the charts after the run): ``plotly.io.templates[name]`` reads
    this very file and builds a ``go.layout.Template`` from it, which imports plotly's graph
    objects and validators: ~0.09 s CPU, paid once by every process that draws a page, for a
    ``to_plotly_json()`` equal to the file's JSON (tested). Should a plotly version no longer
    ship the file, its registry serves the template as before."""
    import json
    import pkgutil

    try:
        raw = pkgutil.get_data("plotly", f"package_data/templates/{name}.json")
    except OSError:
        raw = None
    if raw is not None:
        return dict(json.loads(raw))
    import plotly.io as pio

    return dict(pio.templates[name].to_plotly_json())


def stacked_axes(heights: Sequence[float], titles: Sequence[str], gap: float = 0.04) -> dict[str, Any]:
    """Layout entries of vertically stacked y axes sharing one x axis (top row first)."""
    total = float(sum(heights))
    usable = 1.0 - gap * (len(heights) - 1)
    layout: dict[str, Any] = {}
    annotations: list[dict[str, Any]] = []
    top = 1.0
    for k, (h, title) in enumerate(zip(heights, titles, strict=True), start=1):
        size = usable * h / total
        name = "yaxis" if k == 1 else f"yaxis{k}"
        layout[name] = {"domain": [max(top - size, 0.0), top], "anchor": "x"}
        annotations.append(
            {
                "text": title,
                "x": 0.5,
                "xref": "paper",
                "y": top,
                "yref": "paper",
                "xanchor": "center",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 13},
            }
        )
        top -= size + gap
    layout["xaxis"] = {"anchor": f"y{len(heights)}" if len(heights) > 1 else "y", "type": "date"}
    layout["annotations"] = annotations
    return layout


def marker_shapes(markers: Sequence[Marker]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(shapes, annotations) of dashed full-height vertical lines with rotated labels."""
    shapes = []
    notes = []
    for ms, label in markers:
        x = str(dt64([ms])[0])
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": x,
                "x1": x,
                "y0": 0,
                "y1": 1,
                "line": {"dash": "dash", "width": 1, "color": "grey"},
            }
        )
        notes.append(
            {
                "x": x,
                "y": 1.0,
                "xref": "x",
                "yref": "paper",
                "text": label,
                "showarrow": False,
                "textangle": -90,
                "xanchor": "right",
                "yanchor": "top",
                "font": {"size": 9, "color": "grey"},
            }
        )
    return shapes, notes


_BUNDLE_MARK = "\x00perpbot: plotly.js here\x00"
"""Stands in for plotly.js while plotly lays out a page. A NUL never comes out of the figure's
JSON (escaped as ``\\u0000``), so the mark is found only where plotly put the bundle."""
_BUNDLE_LOCK = threading.Lock()


@functools.cache
def _plotlyjs_utf8() -> bytes:
    """plotly.js as UTF-8, read and encoded once per process."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def html_page(data: list[dict[str, Any]], layout: Mapping[str, Any], div_id: str) -> bytes:
    """A full offline HTML page (plotly.js inlined), as UTF-8 bytes. ``div_id`` is fixed so that
    the same run gives the same file.

    Why bytes and a mark (issue 13, the charts after the run): plotly's ``to_html`` reads and
    decodes its 4.8 MB bundle for every page and copies it through five ``str.format`` calls,
    then the caller encodes it again: ~40 ms of a ~55 ms page. Here plotly lays the page out with
    a short mark in the bundle's place (its ``get_plotlyjs``, as ``plotly.io._html`` sees it,
    swapped for the call under a lock), and the bundle's UTF-8 bytes, encoded once per process,
    are spliced in: the same bytes as plotly's own page. Should another plotly version not use
    that name, the mark is not found and plotly's own page is returned."""
    import plotly.io as pio
    import plotly.io._html as plotly_html

    fig = {"data": data, "layout": {"template": _template("plotly_white"), **layout}}
    kw: dict[str, Any] = {"include_plotlyjs": True, "full_html": True, "validate": False, "div_id": div_id}
    with _BUNDLE_LOCK:
        real = plotly_html.get_plotlyjs
        plotly_html.get_plotlyjs = lambda: _BUNDLE_MARK
        try:
            page = pio.to_html(fig, **kw)
        finally:
            plotly_html.get_plotlyjs = real
    head, mark, tail = page.partition(_BUNDLE_MARK)
    if not mark or _BUNDLE_MARK in tail:
        return pio.to_html(fig, **kw).encode("utf-8")
    return b"".join((head.encode("utf-8"), _plotlyjs_utf8(), tail.encode("utf-8")))


# ---------------------------------------------------------------------------------------------
# Equity charts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One decimated curve: times (epoch ms, UTC) and values, ready to draw."""

    time_ms: np.ndarray  # int64
    values: np.ndarray  # float64


@dataclass(frozen=True, slots=True)
class EquityChart:
    """Everything both equity charts draw, already decimated: small, plain arrays, so that a
    chart worker process can receive it through a pipe (``chart_jobs``) and both the PNG and the
    HTML show the very same points."""

    title: str
    markers: tuple[Marker, ...]
    portfolio: Series  # portfolio equity (USDT)
    drawdown: Series  # drawdown, percent of the running peak (<= 0)
    symbols: dict[str, Series]  # per symbol: net PnL (equity - its start equity), USDT


def decimated_series(time_ms: np.ndarray, values: np.ndarray, buckets: int = BUCKETS) -> Series:
    """The min/max-decimated curve (every bucket's first, last, lowest and highest point)."""
    if values.size == 0:
        return Series(np.asarray(time_ms[:0], dtype=np.int64), values)
    idx = minmax_index([values], buckets)
    return Series(np.asarray(time_ms, dtype=np.int64)[idx], values[idx])


def equity_chart(report: MetricsReport, title: str, markers: Sequence[Marker] = ()) -> EquityChart:
    """The equity charts' input from a run's metrics (decimation happens here, once)."""
    pc = report.portfolio_curve
    return EquityChart(
        title=title,
        markers=tuple((int(ms), str(label)) for ms, label in markers),
        portfolio=decimated_series(pc.time_ms, pc.equity),
        drawdown=decimated_series(pc.time_ms, drawdown_pct(pc)),
        symbols={
            sym: decimated_series(curve.time_ms, curve.equity - report.per_symbol[sym].start_equity)
            for sym, curve in report.symbol_curves.items()
        },
    )


def equity_png(chart: EquityChart) -> bytes:
    """Equity, per-symbol net PnL and drawdown as a PNG."""
    from perpbot.backtest.figure_stash import take

    fig, (ax_eq, ax_sym, ax_dd) = take("equity")
    if chart.portfolio.time_ms.size:
        p, dd = chart.portfolio, chart.drawdown
        ax_eq.plot(dt64(p.time_ms), p.values, color="tab:blue", lw=1.0, label="portfolio equity")
        ax_dd.fill_between(dt64(dd.time_ms), dd.values, 0.0, color="tab:red", alpha=0.4, step="post")
        for sym, pnl in chart.symbols.items():
            ax_sym.plot(dt64(pnl.time_ms), pnl.values, lw=0.9, label=sym)
    draw_markers_png([ax_eq, ax_sym, ax_dd], chart.markers)
    ax_eq.set_title(chart.title)
    ax_eq.set_ylabel("equity (USDT)")
    ax_eq.legend(loc="upper left", fontsize=8)
    ax_eq.grid(alpha=0.3)
    ax_sym.set_ylabel("net PnL by symbol (USDT)")
    ax_sym.axhline(0.0, color="grey", lw=0.6)
    if chart.symbols:
        ax_sym.legend(loc="upper left", fontsize=8)
    ax_sym.grid(alpha=0.3)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.grid(alpha=0.3)
    for label in ax_dd.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    fig.subplots_adjust(left=0.07, right=0.98, top=0.95, bottom=0.1, hspace=0.08)
    fig.text(0.01, 0.005, UNPROVEN, fontsize=7, color="grey")
    return png_bytes(fig)


def equity_html(chart: EquityChart) -> bytes:
    """Interactive equity / per-symbol PnL / drawdown page (UTF-8)."""
    p, dd = chart.portfolio, chart.drawdown
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "portfolio",
            "x": dt64(p.time_ms),
            "y": p.values,
            "yaxis": "y",
        }
    ]
    for sym, pnl in chart.symbols.items():
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "name": sym,
                "x": dt64(pnl.time_ms),
                "y": pnl.values,
                "yaxis": "y2",
            }
        )
    data.append(
        {
            "type": "scatter",
            "mode": "lines",
            "name": "drawdown %",
            "x": dt64(dd.time_ms),
            "y": dd.values,
            "yaxis": "y3",
            "fill": "tozeroy",
            "line": {"color": "firebrick"},
        }
    )
    layout = stacked_axes(
        [0.5, 0.3, 0.2], ["portfolio equity (USDT)", "net PnL by symbol (USDT)", "drawdown %"]
    )
    shapes, notes = marker_shapes(chart.markers)
    layout["annotations"] += notes
    layout.update(
        shapes=shapes,
        title={"text": f"{chart.title}<br><sup>{UNPROVEN}</sup>"},
        height=850,
        hovermode="x unified",
    )
    return html_page(data, layout, "equity")


def equity_png_bytes(report: MetricsReport, title: str, markers: Sequence[Marker] = ()) -> bytes:
    """``equity_png`` of a run's metrics."""
    return equity_png(equity_chart(report, title, markers))


def equity_html_text(report: MetricsReport, title: str, markers: Sequence[Marker] = ()) -> str:
    """``equity_html`` of a run's metrics, as text."""
    return equity_html(equity_chart(report, title, markers)).decode("utf-8")
