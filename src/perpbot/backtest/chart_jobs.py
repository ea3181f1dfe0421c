"""Report charts as jobs: what to draw, where to write it, and a byte form for a worker process.

Why: drawing the report's charts (equity PNG + HTML, one trades-on-price PNG + HTML per symbol)
took longer than the whole backtest loop. As jobs they can be rendered by forked worker processes
(``chart_pool``) that imported matplotlib and plotly while the loop ran, on the other core, or
in this process when forking is not possible; either way the same function draws the same bytes.

A job travels through a pipe as bytes, never as a pickle: an ``array_file`` whose JSON header
holds the kind, file, scalars, trades, levels and markers (floats are written with ``repr``
precision, so they come back exactly) and whose data are the arrays' raw bytes, read back as
read-only views (numpy refuses an object dtype there). Why not ``.npz`` (issue 13, the charts
after the run): zipping and unzipping the ~10 MB of a year's jobs cost ~0.06 s in the parent and
~0.08 s in the worker, between the run's end and the first chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from perpbot.backtest import array_file
from perpbot.backtest.candle_bars import CANDLE_FIELDS, PNG_CANDLES, Candles, aggregate
from perpbot.backtest.charts import EquityChart, Series, equity_html, equity_png
from perpbot.backtest.trade_chart import Level, TradeChart, trade_chart_html, trade_chart_png
from perpbot.backtest.wf_chart import WalkForwardChart, walk_forward_html, walk_forward_png
from perpbot.domain.types import ClosedTrade, CloseReason, Side

KINDS = ("equity_png", "equity_html", "trades_png", "trades_html", "wf_png", "wf_html")
COST = {"equity_png": 4, "trades_png": 3, "equity_html": 1, "trades_html": 1, "wf_png": 4, "wf_html": 1}
"""Relative drawing time of each kind (measured: a PNG costs ~3-4x its HTML page); used to
share a batch evenly between worker processes."""


@dataclass(frozen=True, slots=True)
class ChartJob:
    """Draw ``data`` as ``kind`` and write it (atomically) to ``path``."""

    kind: str
    path: Path
    data: EquityChart | TradeChart | WalkForwardChart

    def __post_init__(self) -> None:
        want = {"equity": EquityChart, "trades": TradeChart, "wf": WalkForwardChart}.get(
            self.kind.split("_")[0], TradeChart
        )
        if self.kind not in KINDS or not isinstance(self.data, want):
            raise ValueError(f"chart job {self.kind!r} with {type(self.data).__name__}")

    @property
    def cost(self) -> int:
        return COST[self.kind]


def draw(job: ChartJob) -> bytes:
    """The file's bytes (PNG, or UTF-8 HTML)."""
    d = job.data
    if isinstance(d, EquityChart):
        return equity_png(d) if job.kind == "equity_png" else equity_html(d)
    if isinstance(d, WalkForwardChart):
        return walk_forward_png(d) if job.kind == "wf_png" else walk_forward_html(d)
    args = (d.symbol, d.candles, d.trades, d.levels, d.markers)
    return trade_chart_png(*args) if job.kind == "trades_png" else trade_chart_html(*args)


def render(job: ChartJob) -> Path:
    """Draw the job and write its file atomically; returns the path."""
    from perpbot.fileio import atomic_write_bytes

    atomic_write_bytes(job.path, draw(job))
    return job.path


def equity_jobs(chart: EquityChart, png: Path, html: Path) -> list[ChartJob]:
    return [ChartJob("equity_png", png, chart), ChartJob("equity_html", html, chart)]


def walk_forward_jobs(chart: WalkForwardChart, png: Path, html: Path) -> list[ChartJob]:
    return [ChartJob("wf_png", png, chart), ChartJob("wf_html", html, chart)]


def trade_jobs(chart: TradeChart, stem: Path) -> list[ChartJob]:
    """The PNG's job carries the candles already merged as the PNG draws them (``aggregate``:
    merging merged candles changes nothing, so the same pixels), not the whole year again: the
    jobs of a year's run are ~5 MB lighter to encode, send and decode between the run's end and
    the first chart (issue 13)."""
    merged = replace(chart, candles=aggregate(chart.candles, PNG_CANDLES))
    return [
        ChartJob("trades_png", stem.with_suffix(".png"), merged),
        ChartJob("trades_html", stem.with_suffix(".html"), chart),
    ]


# ---------------------------------------------------------------------------------------------
# Byte form
# ---------------------------------------------------------------------------------------------

_TRADE_FIELDS = (
    "symbol",
    "side",
    "entry_time_ms",
    "exit_time_ms",
    "entry_price",
    "exit_price",
    "quantity",
    "realized_pnl",
    "entry_fee",
    "exit_fee",
    "funding",
    "reason",
)


def _trade_row(t: ClosedTrade) -> list[Any]:
    row: list[Any] = [getattr(t, f) for f in _TRADE_FIELDS]
    row[1], row[11] = t.side.value, t.reason.value
    return row


def _trade(row: Sequence[Any]) -> ClosedTrade:
    kw = dict(zip(_TRADE_FIELDS, row, strict=True))
    kw["side"], kw["reason"] = Side(kw["side"]), CloseReason(kw["reason"])
    return ClosedTrade(**kw)


def encode(job: ChartJob) -> bytes:
    """The job as bytes: an ``array_file`` (JSON header, the arrays' raw bytes)."""
    d = job.data
    arrays: dict[str, np.ndarray] = {}
    head: dict[str, Any] = {"kind": job.kind, "path": str(job.path)}
    if isinstance(d, WalkForwardChart):
        head.update(title=d.title, symbols=list(d.symbols), modes=list(d.curves))
        head["folds"] = [[i, a, b, had] for i, a, b, had in d.folds]
        for k, s in enumerate(d.curves.values()):
            arrays[f"curve{k}_t"], arrays[f"curve{k}_v"] = s.time_ms, s.values
    elif isinstance(d, EquityChart):
        head["markers"] = [list(m) for m in d.markers]
        head["title"] = d.title
        head["symbols"] = list(d.symbols)
        named = {"portfolio": d.portfolio, "drawdown": d.drawdown}
        named.update({f"sym{k}": s for k, s in enumerate(d.symbols.values())})
        for name, s in named.items():
            arrays[f"{name}_t"], arrays[f"{name}_v"] = s.time_ms, s.values
    else:
        head["markers"] = [list(m) for m in d.markers]
        head["symbol"] = d.symbol
        head["trades"] = [_trade_row(t) for t in d.trades]
        head["levels"] = [[lv.kind, lv.start_ms, lv.end_ms, lv.price] for lv in d.levels]
        arrays.update(zip(CANDLE_FIELDS, d.candles.columns(), strict=True))
    return array_file.dumps(head, arrays)


def decode(blob: bytes) -> ChartJob:
    """The job ``encode`` wrote (``array_file.BadArrayFile`` when it is not one)."""
    head, arrays = array_file.loads(blob)
    markers = tuple((int(ms), str(label)) for ms, label in head.get("markers", ()))
    data: EquityChart | TradeChart | WalkForwardChart
    if head["kind"].startswith("wf"):
        modes = enumerate(head["modes"])
        curves = {m: Series(arrays[f"curve{k}_t"], arrays[f"curve{k}_v"]) for k, m in modes}
        data = WalkForwardChart(
            title=head["title"],
            symbols=tuple(head["symbols"]),
            curves=curves,
            folds=tuple((int(i), int(a), int(b), dict(had)) for i, a, b, had in head["folds"]),
        )
    elif head["kind"].startswith("equity"):

        def series(name: str) -> Series:
            return Series(arrays[f"{name}_t"], arrays[f"{name}_v"])

        data = EquityChart(
            title=head["title"],
            markers=markers,
            portfolio=series("portfolio"),
            drawdown=series("drawdown"),
            symbols={sym: series(f"sym{k}") for k, sym in enumerate(head["symbols"])},
        )
    else:
        data = TradeChart(
            symbol=head["symbol"],
            candles=Candles(*(arrays[f] for f in CANDLE_FIELDS)),
            trades=tuple(_trade(r) for r in head["trades"]),
            levels=tuple(Level(k, int(a), int(b), float(p)) for k, a, b, p in head["levels"]),
            markers=markers,
        )
    return ChartJob(head["kind"], Path(head["path"]), data)
