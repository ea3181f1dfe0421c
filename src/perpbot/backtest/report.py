"""Backtest report files and the terminal summary.

Files written into the output folder (each atomically: temp file, then rename, so an interrupted
run never leaves a half-written report next to a complete one):

- ``trades.csv``: one row per closed trade, times in UTC ISO-8601, prices rounded to the symbol's
  tick, other floats with ``repr`` precision.
- ``metrics.json``: per-symbol and portfolio metrics, the trade-list fingerprint, the run's
  parameters and the honesty note. Strict JSON: an undefined ratio is ``null``, never ``NaN``.
- ``equity.png``: portfolio equity, per-symbol net PnL and drawdown; ``equity.html``: the same as
  an interactive page that opens offline (``perpbot.backtest.charts``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perpbot.backtest.chart_jobs import ChartJob, equity_jobs, render
from perpbot.backtest.charts import Marker, equity_chart
from perpbot.backtest.metrics import Metrics, MetricsReport
from perpbot.domain.types import ClosedTrade
from perpbot.exchange.filters import round_price
from perpbot.fileio import atomic_write_bytes, jsonable

if TYPE_CHECKING:  # rich loads for the summary only: after the charts went to their worker (issue 13)
    from rich.console import Group
    from rich.table import Table

HONESTY_NOTE = (
    "Profitability is unproven. Prior research on this design found no deployable edge after fees "
    "(SPEC §13): in-sample and sweep results shrank or reversed out of sample. Treat these figures "
    "as a test of the machinery, not as evidence of an edge; select symbols and parameters only on "
    "walk-forward, out-of-sample results with enough trades (≥ 50)."
)

TRADE_COLUMNS = (
    "symbol",
    "side",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "quantity",
    "entry_fee",
    "exit_fee",
    "fees",
    "funding",
    "realized_pnl",
    "net_pnl",
    "reason",
)


@dataclass(frozen=True, slots=True)
class ReportFiles:
    out_dir: Path
    trades_csv: Path
    metrics_json: Path
    equity_png: Path
    equity_html: Path


def iso_utc(ms: int) -> str:
    """``2025-03-05T15:00:00Z`` (seconds precision unless the time has milliseconds)."""
    dt = datetime.fromtimestamp(ms / 1000.0, tz=UTC)
    text = dt.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")
    return text.replace("+00:00", "Z")


def trades_csv_text(trades: Sequence[ClosedTrade], ticks: Mapping[str, float] | None = None) -> str:
    """The CSV body (header + one row per trade, in the given order).

    ``ticks`` (symbol → tick size): entry and exit prices are written rounded to the symbol's
    tick, as the exchange would show them (a fill's average over several prices or a slipped
    market fill is generally off the grid). PnL, fees and funding are the exact figures the
    bots booked, so summing the column reproduces ``metrics.json``.
    """
    ticks = ticks or {}

    def price(sym: str, p: float) -> str:
        tick = ticks.get(sym)
        return repr(round_price(float(p), tick) if tick else float(p))

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRADE_COLUMNS)
    for t in trades:
        w.writerow(
            (
                t.symbol,
                t.side.value,
                iso_utc(t.entry_time_ms),
                price(t.symbol, t.entry_price),
                iso_utc(t.exit_time_ms),
                price(t.symbol, t.exit_price),
                repr(float(t.quantity)),
                repr(float(t.entry_fee)),
                repr(float(t.exit_fee)),
                repr(float(t.fees)),
                repr(float(t.funding)),
                repr(float(t.realized_pnl)),
                repr(float(t.net_pnl)),
                t.reason.value,
            )
        )
    return buf.getvalue()


def metrics_document(report: MetricsReport, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """What ``metrics.json`` holds."""
    return jsonable(
        {
            **report.as_dict(),
            "parameters": dict(parameters),
            "definitions": {
                "net_pnl": "realised PnL - entry fee - exit fee + funding",
                "profit_factor": "gross profit / gross loss of net trade PnL; null without a losing trade",
                "max_drawdown_pct": "largest fall from a running equity peak, percent of that peak",
                "sharpe": "daily (UTC) returns of the mark-to-market equity curve, mean/std*sqrt(365), rf 0",
                "exposure": "fraction of the run's time span with a position open",
                "cagr_pct": "(end/start)^(365 d/span) - 1, percent; extrapolates a run shorter than a year",
                "sortino": "daily returns, mean / sqrt(mean(min(r,0)^2)) * sqrt(365), target 0",
                "calmar": "cagr_pct / max_drawdown_pct",
                "durations": "avg_duration_h / median_duration_h: exit time - entry time, hours",
                "long_short": "long_* / short_*: trades, net PnL and win rate of each side",
                "buy_and_hold": "the symbols bought at the window's first close, equal weights "
                "(initial / N), held to its last close; unleveraged, no fees or funding",
                "units": "money in USDT (the account currency), ratios unit-free, percentages in percent",
                "per_symbol_equity_base": "initial balance / number of symbols",
                "fingerprint": "sha256 of the canonical trade list (perpbot.backtest.metrics.fingerprint)",
            },
            "honesty_note": HONESTY_NOTE,
        }
    )


def report_files(out_dir: Path) -> ReportFiles:
    """The report's file names in ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return ReportFiles(
        out_dir=out,
        trades_csv=out / "trades.csv",
        metrics_json=out / "metrics.json",
        equity_png=out / "equity.png",
        equity_html=out / "equity.html",
    )


def write_tables(
    files: ReportFiles,
    trades: Sequence[ClosedTrade],
    report: MetricsReport,
    parameters: Mapping[str, Any],
    ticks: Mapping[str, float] | None = None,
) -> None:
    """``trades.csv`` and ``metrics.json``."""
    atomic_write_bytes(files.trades_csv, trades_csv_text(trades, ticks).encode("utf-8"))
    doc = metrics_document(report, parameters)
    atomic_write_bytes(
        files.metrics_json, (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode("utf-8")
    )


def equity_chart_jobs(
    files: ReportFiles, report: MetricsReport, title: str, markers: Sequence[Marker] = ()
) -> list[ChartJob]:
    """``equity.png`` and ``equity.html`` as chart jobs (one decimated input for both)."""
    return equity_jobs(equity_chart(report, title, markers), files.equity_png, files.equity_html)


def write_report(
    out_dir: Path,
    trades: Sequence[ClosedTrade],
    report: MetricsReport,
    parameters: Mapping[str, Any],
    *,
    title: str = "perpbot backtest",
    markers: Sequence[Marker] = (),
    ticks: Mapping[str, float] | None = None,
) -> ReportFiles:
    """Write the four report files into ``out_dir`` (created if needed), charts drawn in this
    process, and return their paths. ``perpbot backtest`` writes the same files with its charts
    drawn by ``chart_pool`` workers."""
    files = report_files(out_dir)
    write_tables(files, trades, report, parameters, ticks)
    for job in equity_chart_jobs(files, report, title, markers):
        render(job)
    return files


# ---------------------------------------------------------------------------------------------
# Terminal summary
# ---------------------------------------------------------------------------------------------


def format_number(v: float | None, fmt: str = "{:,.2f}") -> str:
    return "n/a" if v is None or not math.isfinite(v) else fmt.format(v)


def _metrics_row(name: str, m: Metrics) -> list[str]:
    return [
        name,
        str(m.trades),
        format_number(None if m.win_rate is None else m.win_rate * 100, "{:.0f}%"),
        format_number(m.profit_factor, "{:.2f}"),
        format_number(m.net_pnl),
        format_number(m.fees),
        f"{m.max_drawdown_pct:.1f}%",
        format_number(m.sharpe, "{:.2f}"),
        f"{m.exposure * 100:.1f}%",
    ]


def summary_table(report: MetricsReport, title: str = "Backtest summary") -> Table:
    """One-screen table (fits 80 columns): one row per symbol and a portfolio row.

    Funding, the average trade and the drawdown in USDT are in ``metrics.json``.
    """
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("symbol", no_wrap=True, min_width=9)
    for col in ("trades", "win", "PF", "net PnL", "fees", "max DD", "Sharpe", "exposure"):
        table.add_column(col, justify="right", no_wrap=True)
    for sym, m in report.per_symbol.items():
        table.add_row(*_metrics_row(sym, m))
    table.add_section()
    table.add_row(*_metrics_row("PORTFOLIO", report.portfolio), style="bold")
    return table


def _pct(v: float | None) -> str:
    return format_number(v, "{:+.1f}%")


def _profile_row(name: str, m: Metrics, hold: float | None) -> list[str]:
    return [
        name,
        f"{m.long_trades}/{m.short_trades}",
        format_number(m.avg_duration_h, "{:.1f}"),
        format_number(m.median_duration_h, "{:.1f}"),
        _pct(m.cagr_pct),
        format_number(m.sortino, "{:.2f}"),
        format_number(m.calmar, "{:.2f}"),
        _pct(m.return_pct),
        _pct(hold),
    ]


def profile_table(report: MetricsReport) -> Table:
    """Trader's figures (fits 80 columns): long/short (L/S) trade counts, holding hours, CAGR,
    Sortino, Calmar, the strategy's return beside buy-and-hold of the same symbols and window."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("symbol", no_wrap=True, min_width=9)
    for col in ("L/S", "avg h", "med h", "CAGR", "Sortino", "Calmar", "return", "B&H"):
        table.add_column(col, justify="right", no_wrap=True)
    bench = report.benchmark
    for sym, m in report.per_symbol.items():
        table.add_row(*_profile_row(sym, m, None if bench is None else bench.per_symbol_return_pct.get(sym)))
    table.add_section()
    hold = None if bench is None else bench.return_pct
    table.add_row(*_profile_row("PORTFOLIO", report.portfolio, hold), style="bold")
    return table


def capital_line(report: MetricsReport, sim: Mapping[str, Any] | None = None) -> str:
    """The starting capital, the end equity and the units every figure is in."""
    p = report.portfolio
    text = (
        f"capital: {p.start_equity:,.2f} USDT at the start (1/{max(len(report.per_symbol), 1)} per "
        f"symbol), {p.end_equity:,.2f} USDT at the end; PnL, fees and equity in USDT, "
        "durations in hours, B&H = buy and hold, unleveraged, no fees"
    )
    if sim:
        text += (
            f"; costs: taker {sim.get('taker_fee')}, maker {sim.get('maker_fee')}, "
            f"slippage {sim.get('slippage_bps')} bps"
        )
    return text


def summary_renderable(
    report: MetricsReport,
    files: ReportFiles | None,
    title: str,
    notes: Sequence[str] = (),
    *,
    sim: Mapping[str, Any] | None = None,
) -> Group:
    """The tables, the capital, the fingerprint, what limited the run, where the files are, the
    honesty note."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = [summary_table(report, title), profile_table(report)]
    parts.append(Text(capital_line(report, sim)))
    parts.append(Text(f"fingerprint {report.fingerprint}", style="dim"))
    parts.extend(Text(f"note: {line}", style="cyan") for line in notes)
    if files is not None:
        parts.append(
            Text(f"report: {files.trades_csv}  {files.metrics_json}  {files.equity_png}  {files.equity_html}")
        )
    parts.append(Text(HONESTY_NOTE, style="yellow"))
    return Group(*parts)
