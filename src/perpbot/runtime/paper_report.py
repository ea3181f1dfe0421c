"""What ``perpbot paper`` writes into ``--out``: the same report as ``perpbot backtest``.

``trades.csv``, ``metrics.json`` (with the fingerprint), ``equity.png``/``.html`` and the trade
charts come from the backtest's own writers (``backtest.report.write_report``,
``backtest.trade_chart.write_trade_charts``) over the paper trades, so the two reports compare
line by line; the journal was written there during the run. The candles for the equity curve and
the charts are the ones the simulator replayed (``simulator.market.load_market_data`` with the
simulator's own arguments), its filters give the price ticks, and the window is the replay's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perpbot.backtest.candle_bars import Candles
from perpbot.backtest.metrics import summarize
from perpbot.backtest.prepare import forward_fill
from perpbot.backtest.report import ReportFiles, write_report
from perpbot.backtest.runner import iso_minute
from perpbot.backtest.trade_chart import write_trade_charts
from perpbot.exchange.known_filters import derived_filters
from perpbot.runtime.paper import BAR_MS, PaperOptions
from perpbot.simulator.market import Market, load_market_data, parse_time


@dataclass(frozen=True, slots=True)
class PaperReport:
    files: ReportFiles
    charts: list[Path]
    fingerprint: str


def replayed_market(opts: PaperOptions) -> Market:
    """The candles the simulator child replayed (same symbols, data, start and days)."""
    syms = list(dict.fromkeys([*opts.symbols, *opts.correlation]))
    from_ms = parse_time(opts.from_) if opts.from_ is not None else None
    return load_market_data(syms, opts.data_dir, from_ms, opts.days)


def write_paper_report(out: Path, res: Any, opts: PaperOptions, *, use_ml: bool) -> PaperReport:
    """The backtest's report files for the paper run ``res`` (a ``PaperResult``) into ``out``."""
    market = replayed_market(opts)
    symbols = list(opts.symbols)
    start_ms, end_ms = res.start_ms, res.end_ms
    series = {s: market.series[s] for s in symbols}
    in_window = [x.open_time[(x.open_time >= start_ms) & (x.open_time < end_ms)] for x in series.values()]
    timeline = np.unique(np.concatenate(in_window)) if in_window else np.zeros(0, dtype=np.int64)
    closes = {s: forward_fill(x.open_time, x.close, timeline) for s, x in series.items()}
    report = summarize(
        res.trades,
        symbols,
        timeline + BAR_MS,
        closes,
        opts.balance,
        start_ms=start_ms,
        end_ms=end_ms,
    )
    ticks = {s: derived_filters(s, float(np.nanmedian(x.close))).tick_size for s, x in market.series.items()}
    mode = "ML on" if use_ml else "ML off"
    title = f"perpbot paper {','.join(symbols)} {iso_minute(start_ms)} → {iso_minute(end_ms)} ({mode})"
    params = {
        "mode": "paper",
        "symbols": symbols,
        "start": iso_minute(start_ms),
        "end": iso_minute(end_ms),
        "window": "start inclusive, end exclusive, candle open times, UTC",
        "use_ml": use_ml,
        "data_dir": None if opts.data_dir is None else str(opts.data_dir),
        "initial_balance": opts.balance,
        "final_balance": res.final_balance,
        "stats": {
            "candles": res.steps,
            "reconciles": res.reconciles,
            "bot_errors": res.bot_errors,
            "align_timeouts": res.align_timeouts,
            "alerts": len(res.alerts),
            "alerts_posted": None if res.alert_delivery is None else res.alert_delivery.sent,
            "seconds_loop": round(res.wall_s, 3),
            "candles_per_second": round(res.steps / res.wall_s, 1) if res.wall_s > 0 else None,
            "state_reads": res.state_reads,
            "settle_fallbacks": res.fallbacks,
            "weight_waits": res.weight_waits,
            "preloaded_candles": dict(res.preloaded),
        },
    }
    files = write_report(out, res.trades, report, params, title=title, ticks=ticks)
    candles = {}
    for s, x in series.items():
        lo, hi = np.searchsorted(x.open_time, [start_ms, end_ms], side="left")
        candles[s] = Candles(x.open_time[lo:hi], x.open[lo:hi], x.high[lo:hi], x.low[lo:hi], x.close[lo:hi])
    journal = out / "journal.sqlite3"
    charts = write_trade_charts(out, candles, res.trades, (), journal if journal.exists() else None)
    return PaperReport(files, charts, report.fingerprint)


def report_lines(res: Any, rep: PaperReport) -> list[str]:
    """What ``perpbot paper`` prints at the end."""
    lines = [
        f"paper: {len(res.trades)} trades over {res.steps} candles "
        f"({res.steps / res.wall_s if res.wall_s > 0 else 0.0:.1f} candles/s), "
        f"final balance {res.final_balance:.2f} USDT",
        f"paper: fingerprint {rep.fingerprint}",
        f"paper: report in {rep.files.out_dir} (trades.csv, metrics.json, equity.png, equity.html, "
        f"{len(rep.charts)} trade charts, journal.sqlite3)",
    ]
    d = getattr(res, "alert_delivery", None)
    if d is not None:
        lines.append(
            f"paper: {d.sent} alerts posted to Discord ([PAPER]); "
            f"{d.failed} failed, {d.dropped} dropped, {d.undelivered_at_close} undelivered at stop"
        )
    return lines
