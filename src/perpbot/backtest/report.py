"""Backtest report files and the terminal summary.

Files written into the output folder (each atomically: temp file, then rename, so an interrupted
run never leaves a half-written report next to a complete one):

- ``trades.csv``: one row per closed trade, times in UTC ISO-8601, floats with ``repr`` precision.
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
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from perpbot.backtest.charts import Marker, equity_html_text, equity_png_bytes
from perpbot.backtest.metrics import Metrics, MetricsReport
from perpbot.domain.types import ClosedTrade
from perpbot.fileio import atomic_write_bytes, jsonable

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


def trades_csv_text(trades: Sequence[ClosedTrade]) -> str:
    """The CSV body (header + one row per trade, in the given order)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRADE_COLUMNS)
    for t in trades:
        w.writerow(
            (
                t.symbol,
                t.side.value,
                iso_utc(t.entry_time_ms),
                repr(float(t.entry_price)),
                iso_utc(t.exit_time_ms),
                repr(float(t.exit_price)),
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
                "per_symbol_equity_base": "initial balance / number of symbols",
                "fingerprint": "sha256 of the canonical trade list (perpbot.backtest.metrics.fingerprint)",
            },
            "honesty_note": HONESTY_NOTE,
        }
    )


def write_report(
    out_dir: Path,
    trades: Sequence[ClosedTrade],
    report: MetricsReport,
    parameters: Mapping[str, Any],
    *,
    title: str = "perpbot backtest",
    markers: Sequence[Marker] = (),
) -> ReportFiles:
    """Write the four report files into ``out_dir`` (created if needed) and return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        out_dir=out,
        trades_csv=out / "trades.csv",
        metrics_json=out / "metrics.json",
        equity_png=out / "equity.png",
        equity_html=out / "equity.html",
    )
    atomic_write_bytes(files.trades_csv, trades_csv_text(trades).encode("utf-8"))
    doc = metrics_document(report, parameters)
    atomic_write_bytes(
        files.metrics_json, (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode("utf-8")
    )
    atomic_write_bytes(files.equity_png, equity_png_bytes(report, title, markers))
    atomic_write_bytes(files.equity_html, equity_html_text(report, title, markers).encode("utf-8"))
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
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("symbol", no_wrap=True, min_width=9)
    for col in ("trades", "win", "PF", "net PnL", "fees", "max DD", "Sharpe", "exposure"):
        table.add_column(col, justify="right", no_wrap=True)
    for sym, m in report.per_symbol.items():
        table.add_row(*_metrics_row(sym, m))
    table.add_section()
    table.add_row(*_metrics_row("PORTFOLIO", report.portfolio), style="bold")
    return table


def summary_renderable(
    report: MetricsReport, files: ReportFiles | None, title: str, notes: Sequence[str] = ()
) -> Group:
    """The table, the fingerprint, what limited the run, where the files are, the honesty note."""
    parts: list[Any] = [summary_table(report, title)]
    parts.append(Text(f"fingerprint {report.fingerprint}", style="dim"))
    parts.extend(Text(f"note: {line}", style="cyan") for line in notes)
    if files is not None:
        parts.append(
            Text(f"report: {files.trades_csv}  {files.metrics_json}  {files.equity_png}  {files.equity_html}")
        )
    parts.append(Text(HONESTY_NOTE, style="yellow"))
    return Group(*parts)
