"""Trades on price, one chart per symbol: why each trade won or lost.

What is drawn: the symbol's candles over the run's window; each entry (▲ long, ▼ short) and exit
(marked by its reason: TP, SL, REVERSE, END_OF_DATA, …) joined by a line green for a net win
and red for a net loss; the stop-loss and take-profit levels the bot had resting on the exchange
while the position was open; the symbol's kill-switch trips and resets as vertical lines.

Where the facts come from: only the run's own records. Trades are the closed-trade list; SL/TP
levels are the ``SL``/``TP`` orders of the run's journal (their trigger prices, from the moment
each was placed until it was replaced or the position closed); kill-switch trips and resets are
journal events. Nothing is recomputed, so the chart cannot disagree with what the bots did.

PNG: a year of 15-minute candles is ~35k bars, more than the pixels, so the PNG aggregates them
into about one candle per pixel column (first open, highest high, lowest low, last close of each
bucket: the exact OHLC of a longer bar, so no extreme is lost). HTML: every candle, so that zooming
in on a trade shows its real bars.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perpbot.backtest.candle_bars import PNG_CANDLES, Candles, aggregate
from perpbot.backtest.charts import (
    UNPROVEN,
    Marker,
    draw_markers_png,
    dt64,
    html_page,
    marker_shapes,
    png_bytes,
)
from perpbot.backtest.trade_png_layers import DOWN, UP, draw_candles, draw_levels
from perpbot.domain.types import ClosedTrade, Side

REASON_STYLE = {  # reason → (matplotlib marker, colour)
    "TP": ("o", "tab:green"),
    "SL": ("X", "tab:red"),
    "REVERSE": ("D", "tab:orange"),
    "END_OF_DATA": ("s", "tab:gray"),
    "LIQUIDATION": ("*", "black"),
}
_OTHER_STYLE = ("P", "tab:purple")
_PLOTLY_SYMBOL = {"o": "circle", "X": "x", "D": "diamond", "s": "square", "*": "star", "P": "cross"}


@dataclass(frozen=True, slots=True)
class Level:
    """A resting protective order's trigger price over ``[start_ms, end_ms]``."""

    kind: str  # "SL" or "TP"
    start_ms: int
    end_ms: int
    price: float


@dataclass(frozen=True, slots=True)
class TradeChart:
    """One symbol's chart input: ``trade_chart_png`` / ``trade_chart_html``'s arguments."""

    symbol: str
    candles: Candles
    trades: tuple[ClosedTrade, ...]
    levels: tuple[Level, ...]
    markers: tuple[Marker, ...]


def levels_from_journal(path: Path | str, symbol: str, trades: Sequence[ClosedTrade]) -> list[Level]:
    """The SL/TP levels of ``symbol``'s positions, read from a run's journal file."""
    from perpbot.engine.journal import Journal

    journal = Journal(path, background=False)  # only read: no writer thread to start and stop
    try:
        orders = [
            o
            for o in journal.orders(symbol)
            if o.kind in ("SL", "TP") and o.trigger_price and o.status not in ("ERROR", "REJECTED")
        ]
    finally:
        journal.close()
    by_kind = {kind: [o for o in orders if o.kind == kind] for kind in ("SL", "TP")}
    times = {kind: [o.time_ms for o in mine] for kind, mine in by_kind.items()}
    in_order = all(all(a <= b for a, b in itertools.pairwise(t)) for t in times.values())
    out: list[Level] = []
    for tr in trades:
        if tr.symbol != symbol:
            continue
        for kind in ("SL", "TP"):
            # Half-open [entry, exit): on a reverse, the next position's orders are placed at
            # this one's exit time and belong to it. Orders in time order (as a run journals
            # them) are found by bisection: a scan of every order per trade took ~20 ms a year.
            t = times[kind]
            if in_order:
                lo = bisect.bisect_left(t, tr.entry_time_ms)
                hi = max(bisect.bisect_left(t, tr.exit_time_ms), bisect.bisect_right(t, tr.entry_time_ms))
                mine = by_kind[kind][lo:hi]
            else:
                mine = [
                    o
                    for o in by_kind[kind]
                    if tr.entry_time_ms <= o.time_ms
                    and (o.time_ms < tr.exit_time_ms or o.time_ms == tr.entry_time_ms)
                ]
            for k, o in enumerate(mine):
                end = mine[k + 1].time_ms if k + 1 < len(mine) else tr.exit_time_ms
                out.append(Level(kind, max(o.time_ms, tr.entry_time_ms), end, float(o.trigger_price or 0.0)))
    return out


def _style(reason: str) -> tuple[str, str]:
    return REASON_STYLE.get(reason, _OTHER_STYLE)


def trade_chart_png(
    symbol: str,
    candles: Candles,
    trades: Sequence[ClosedTrade],
    levels: Sequence[Level] = (),
    markers: Sequence[Marker] = (),
    title: str = "",
) -> bytes:
    """The symbol's trades on its (aggregated) candles as a PNG."""
    from perpbot.backtest.figure_stash import take_trades

    c = aggregate(candles, PNG_CANDLES)
    fig, ax, drawn = take_trades(c)
    if c.open_time_ms.size and not drawn:
        draw_candles(ax, c)
    draw_levels(ax, levels)
    for won, colour in ((True, "tab:green"), (False, "tab:red")):
        mine = [t for t in trades if (t.net_pnl > 0) is won]
        if mine:  # one NaN-separated line per colour: one artist, not one per trade
            xs = np.array([[t.entry_time_ms, t.exit_time_ms, t.exit_time_ms] for t in mine], dtype=np.int64)
            ys = np.array([[t.entry_price, t.exit_price, np.nan] for t in mine])
            ax.plot(dt64(xs.ravel()), ys.ravel(), color=colour, lw=1.0)
    for side, mark, colour in ((Side.LONG, "^", "tab:blue"), (Side.SHORT, "v", "tab:purple")):
        mine = [t for t in trades if t.side is side]
        if mine:
            ax.scatter(
                dt64([t.entry_time_ms for t in mine]),
                [t.entry_price for t in mine],
                marker=mark,
                s=45,
                color=colour,
                edgecolors="black",
                linewidths=0.4,
                zorder=3,
                label=f"{side.value.lower()} entry",
            )
    for reason in sorted({t.reason.value for t in trades}):
        mine = [t for t in trades if t.reason.value == reason]
        mark, colour = _style(reason)
        ax.scatter(
            dt64([t.exit_time_ms for t in mine]),
            [t.exit_price for t in mine],
            marker=mark,
            s=35,
            color=colour,
            edgecolors="black",
            linewidths=0.4,
            zorder=3,
            label=f"exit {reason}",
        )
    draw_markers_png([ax], markers)
    ax.set_title(title or f"{symbol}: trades on price")
    ax.set_ylabel(f"{symbol} price (USDT)")
    ax.grid(alpha=0.3)
    if trades or levels:
        ax.legend(loc="upper left", fontsize=8, ncol=2)
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")
    fig.subplots_adjust(left=0.06, right=0.99, top=0.94, bottom=0.13)
    fig.text(0.01, 0.005, UNPROVEN, fontsize=7, color="grey")
    return png_bytes(fig)


def _hover(tr: ClosedTrade) -> str:
    return (
        f"{tr.side.value} {tr.quantity:g} @ {tr.entry_price:.6g} → {tr.exit_price:.6g} "
        f"({tr.reason.value})<br>net {tr.net_pnl:+.2f} USDT, fees {tr.fees:.2f}, funding {tr.funding:+.2f}"
    )


def trade_chart_html(
    symbol: str,
    candles: Candles,
    trades: Sequence[ClosedTrade],
    levels: Sequence[Level] = (),
    markers: Sequence[Marker] = (),
    title: str = "",
) -> bytes:
    """The symbol's trades on every candle, as an offline interactive page (UTF-8)."""
    data: list[dict[str, Any]] = [
        {
            "type": "candlestick",
            "name": symbol,
            "x": dt64(candles.open_time_ms),
            "open": candles.open,
            "high": candles.high,
            "low": candles.low,
            "close": candles.close,
            "increasing": {"line": {"color": UP}},
            "decreasing": {"line": {"color": DOWN}},
        }
    ]
    for kind, colour in (("SL", "red"), ("TP", "green")):
        xs: list[Any] = []
        ys: list[Any] = []
        for lv in (lv for lv in levels if lv.kind == kind):
            xs += [*dt64([lv.start_ms, lv.end_ms]).astype(str).tolist(), None]
            ys += [lv.price, lv.price, None]
        if xs:
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": f"{kind} level",
                    "x": xs,
                    "y": ys,
                    "line": {"color": colour, "dash": "dash", "width": 1},
                }
            )
    for won, colour in ((True, "green"), (False, "red")):
        xs, ys = [], []
        for tr in (t for t in trades if (t.net_pnl > 0) is won):
            xs += [*dt64([tr.entry_time_ms, tr.exit_time_ms]).astype(str).tolist(), None]
            ys += [tr.entry_price, tr.exit_price, None]
        if xs:
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "name": "winning trade" if won else "losing trade",
                    "x": xs,
                    "y": ys,
                    "line": {"color": colour, "width": 1.5},
                    "hoverinfo": "skip",
                }
            )
    for side, symbol_name, colour in (
        (Side.LONG, "triangle-up", "royalblue"),
        (Side.SHORT, "triangle-down", "purple"),
    ):
        mine = [t for t in trades if t.side is side]
        if mine:
            data.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": f"{side.value.lower()} entry",
                    "x": dt64([t.entry_time_ms for t in mine]),
                    "y": [t.entry_price for t in mine],
                    "marker": {"symbol": symbol_name, "size": 11, "color": colour},
                    "text": [_hover(t) for t in mine],
                    "hoverinfo": "text",
                }
            )
    for reason in sorted({t.reason.value for t in trades}):
        mine = [t for t in trades if t.reason.value == reason]
        mark, colour = _style(reason)
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"exit {reason}",
                "x": dt64([t.exit_time_ms for t in mine]),
                "y": [t.exit_price for t in mine],
                "marker": {"symbol": _PLOTLY_SYMBOL[mark], "size": 9, "color": colour.removeprefix("tab:")},
                "text": [_hover(t) for t in mine],
                "hoverinfo": "text",
            }
        )
    shapes, notes = marker_shapes(markers)
    layout = {
        "title": {"text": f"{title or symbol + ': trades on price'}<br><sup>{UNPROVEN}</sup>"},
        "xaxis": {"type": "date", "rangeslider": {"visible": False}},
        "yaxis": {"title": {"text": f"{symbol} price (USDT)"}},
        "shapes": shapes,
        "annotations": notes,
        "height": 750,
        "hovermode": "closest",
    }
    return html_page(data, layout, f"trades-{symbol.lower()}")


def candles_in_window(market: Any, start_ms: int, end_ms: int) -> Candles:
    """A market frame's candles whose open time is in ``[start_ms, end_ms)``."""
    times = market.index.as_unit("ms").asi8.astype(np.int64)
    lo, hi = np.searchsorted(times, [start_ms, end_ms], side="left")
    cols = [market[c].to_numpy(dtype=np.float64)[lo:hi] for c in ("open", "high", "low", "close")]
    return Candles(times[lo:hi], *cols)


def trade_chart_inputs(
    candles: dict[str, Candles],
    trades: Sequence[ClosedTrade],
    markers: Sequence[Marker],
    journal_path: Path | str | None = None,
) -> list[TradeChart]:
    """Per symbol: its candles, trades, SL/TP levels (from the journal file, when there is one)
    and its own markers (those labelled ``"<SYMBOL> …"``)."""
    use_journal = (
        journal_path is not None and str(journal_path) != ":memory:" and Path(journal_path).is_file()
    )
    out = []
    for sym, c in candles.items():
        mine = tuple(t for t in trades if t.symbol == sym)
        levels = levels_from_journal(journal_path, sym, mine) if use_journal and journal_path else []
        marks = tuple((int(m[0]), m[1]) for m in markers if m[1].split(" ", 1)[0] == sym)
        out.append(TradeChart(sym, c, mine, tuple(levels), marks))
    return out


def chart_stem(out_dir: Path, symbol: str) -> Path:
    """``<out>/trades_<symbol>`` (``.png`` and ``.html`` are added)."""
    return out_dir / f"trades_{symbol.lower()}"


def write_trade_charts(
    out_dir: Path,
    candles: dict[str, Candles],
    trades: Sequence[ClosedTrade],
    markers: Sequence[Marker],
    journal_path: Path | str | None = None,
) -> list[Path]:
    """``trades_<symbol>.png`` and ``.html`` per symbol, drawn in this process (atomic writes);
    returns the paths. ``perpbot backtest`` renders the same jobs in ``chart_pool`` workers."""
    from perpbot.backtest.chart_jobs import render, trade_jobs

    jobs = [
        j
        for chart in trade_chart_inputs(candles, trades, markers, journal_path)
        for j in trade_jobs(chart, chart_stem(out_dir, chart.symbol))
    ]
    return [render(j) for j in jobs]
