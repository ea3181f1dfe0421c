"""Walk-forward reporting: ``walk_forward.json``, each mode's report files, the charts, the table.

One job: presenting a finished walk-forward (``walk_forward`` runs it). Every chart, the fold
charts included, is a job for ``chart_pool``'s worker, forked and warmed up while the folds ran:
this process never imports the plotting libraries (issue 13).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from perpbot.backtest.metrics import Metrics
from perpbot.backtest.report import (
    HONESTY_NOTE,
    ReportFiles,
    atomic_write_bytes,
    equity_chart_jobs,
    format_number,
    report_files,
    write_tables,
)
from perpbot.backtest.runner import BacktestConfig, iso_minute
from perpbot.backtest.wf_plan import day
from perpbot.fileio import jsonable

if TYPE_CHECKING:
    from perpbot.backtest.chart_pool import ChartPool
    from perpbot.backtest.walk_forward import WalkForwardResult

MODES = ("ml_on", "ml_off")


def _mrow(m: Metrics) -> dict[str, Any]:
    return {
        "trades": m.trades,
        "win_rate": m.win_rate,
        "profit_factor": m.profit_factor,
        "net_pnl": m.net_pnl,
        "fees": m.fees,
        "max_drawdown_pct": m.max_drawdown_pct,
        "sharpe": m.sharpe,
    }


def document(result: WalkForwardResult) -> dict[str, Any]:
    """What ``walk_forward.json`` holds."""
    return jsonable(
        {
            "symbols": list(result.symbols),
            "folds_requested": result.k,
            "protocol": {
                "blocks": f"{result.k + 1} equal chronological blocks of the union timeline; "
                "block 0 trains only, blocks 1..K are tested",
                "training": "per symbol, all candles before the test window minus 24 embargo bars; "
                "the dataset drops the last 24 label bars; LightGBM, default parameters",
                "balance": "each fold's runs start from the initial balance",
            },
            "folds": [
                {
                    "fold": f.index,
                    "test_start": iso_minute(f.test_start_ms),
                    "test_end": iso_minute(f.test_end_ms),
                    "models": {
                        s: {
                            "status": m.status,
                            "train_first": None if m.train_first_ms is None else iso_minute(m.train_first_ms),
                            "train_last": None if m.train_last_ms is None else iso_minute(m.train_last_ms),
                            "samples": m.samples,
                            "signals": m.signals,
                            "threshold": m.threshold,
                            "filter": f.filter_stats.get(s),
                        }
                        for s, m in f.models.items()
                    },
                    **{
                        mode: {
                            "fingerprint": r.fingerprint,
                            "portfolio": _mrow(r.metrics.portfolio),
                            "per_symbol": {s: _mrow(x) for s, x in r.metrics.per_symbol.items()},
                            "notes": r.notes(),
                        }
                        for mode, r in f.results.items()
                    },
                }
                for f in result.folds
            ],
            "total": {mode: rep.as_dict() for mode, rep in result.metrics.items()},
            "honesty_note": HONESTY_NOTE,
        }
    )


def write_walk_forward(
    result: WalkForwardResult, out: Path, cfg: BacktestConfig, pool: ChartPool | None = None
) -> WalkForwardResult:
    """``<out>/walk_forward.json`` plus the standard report of each mode in ``<out>/<mode>/``.

    The charts (each mode's equity, the folds' ``walk_forward.png``/``.html``) are drawn by
    ``pool`` (one is started here when none is given) while this process writes the tables."""
    from perpbot.backtest.chart_jobs import walk_forward_jobs
    from perpbot.backtest.chart_pool import ChartPool
    from perpbot.backtest.wf_chart import walk_forward_chart

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, ReportFiles] = {}
    jobs = []
    for mode in MODES:
        title = f"perpbot walk-forward K={result.k} ({mode.replace('_', ' ')}) {','.join(result.symbols)}"
        files[mode] = report_files(out / mode)  # what ``write_report`` writes, charts as jobs
        jobs += equity_chart_jobs(files[mode], result.metrics[mode], title)
    title = f"perpbot walk-forward K={result.k} {','.join(result.symbols)}: ML on vs off, out of sample"
    charts = (out / "walk_forward.png", out / "walk_forward.html")
    jobs += walk_forward_jobs(walk_forward_chart(result, title), *charts)
    with pool if pool is not None else ChartPool.start() as chart_pool:
        chart_pool.send(jobs)
        for mode in MODES:
            params = {
                "mode": mode,
                "walk_forward_folds": result.k,
                "symbols": list(result.symbols),
                "initial_balance": cfg.initial_balance,
                "test_windows": [
                    [iso_minute(f.test_start_ms), iso_minute(f.test_end_ms)] for f in result.folds
                ],
                "note": "out-of-sample trades of every fold, concatenated",
            }
            ticks = {s: f.tick_size for fold in result.folds for s, f in fold.results[mode].filters.items()}
            write_tables(files[mode], result.trades[mode], result.metrics[mode], params, ticks)
        path = out / "walk_forward.json"
        text = json.dumps(document(result), indent=2, allow_nan=False) + "\n"
        atomic_write_bytes(path, text.encode("utf-8"))
        chart_pool.finish()
    return replace(result, out_dir=out, files=files, summary_path=path, charts=charts)


def filter_summary(result: WalkForwardResult) -> list[str]:
    """Per symbol over all folds: what the ML-on filters saw and decided (issue 11 §2)."""
    out: list[str] = []
    for sym in result.symbols:
        rows = [f.filter_stats[sym] for f in result.folds if sym in f.filter_stats]
        seen, acc, rej = (sum(int(r[k]) for r in rows) for k in ("seen", "accepted", "rejected"))
        thr = [f"{r['threshold']:.3f} ({r['threshold_source']})" for r in rows if r["threshold"] is not None]
        out.append(
            f"{sym} ML on: {seen} signals seen by the filter, {acc} accepted, {rej} rejected; "
            f"thresholds per fold with a model: {', '.join(thr) or 'none'}"
        )
    return out


def walk_forward_table(result: WalkForwardResult) -> Table:
    """Folds × (ML on | ML off): trades, profit factor, net PnL; a total row. Fits 80 columns."""
    t = Table(
        title=f"Walk-forward, {result.k} out-of-sample folds: ML filter ON vs OFF, same windows (UTC)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    t.add_column("fold", no_wrap=True)
    t.add_column("test\nfrom", no_wrap=True)
    t.add_column("\nto", no_wrap=True)
    t.add_column("mo-\ndels", justify="right", no_wrap=True)
    for mode in ("ON", "OFF"):
        t.add_column(f"{mode}\ntrades", justify="right", no_wrap=True)
        t.add_column(f"{mode}\nPF", justify="right", no_wrap=True)
        t.add_column(f"{mode}\nnet", justify="right", no_wrap=True)
    for f in result.folds:
        trained = sum(1 for m in f.models.values() if m.status == "trained")
        cells = [str(f.index), day(f.test_start_ms), day(f.test_end_ms), f"{trained}/{len(f.models)}"]
        for mode in MODES:
            p = f.results[mode].metrics.portfolio
            cells += [
                str(p.trades),
                format_number(p.profit_factor, "{:.2f}"),
                format_number(p.net_pnl, "{:.2f}"),
            ]
        t.add_row(*cells)
    t.add_section()
    cells = ["all", day(result.folds[0].test_start_ms), day(result.folds[-1].test_end_ms), ""]
    for mode in MODES:
        p = result.metrics[mode].portfolio
        cells += [str(p.trades), format_number(p.profit_factor, "{:.2f}"), format_number(p.net_pnl, "{:.2f}")]
    t.add_row(*cells, style="bold")
    return t


def walk_forward_renderable(result: WalkForwardResult) -> Group:
    parts: list[Any] = [walk_forward_table(result)]
    start = result.metrics["ml_off"].portfolio.start_equity
    parts.append(
        Text(f"capital: {start:,.2f} USDT at the start of every fold's run, ML on and off alike; PnL in USDT")
    )
    for mode, label in zip(MODES, ("ON ", "OFF"), strict=True):
        parts.append(Text(f"{label} fingerprint {result.metrics[mode].fingerprint}", style="dim"))
    untrained = [
        f"fold {f.index} {s}: {m.status}"
        for f in result.folds
        for s, m in f.models.items()
        if m.status != "trained"
    ]
    for line in untrained:
        parts.append(Text(line, style="yellow"))
    for line in filter_summary(result):
        parts.append(Text(line))
    if result.summary_path is not None:
        parts.append(
            Text(f"report: {result.summary_path}  {result.out_dir}/ml_on/  {result.out_dir}/ml_off/")
        )
    if result.charts:
        parts.append(Text("charts: " + "  ".join(str(p) for p in result.charts)))
    parts.append(Text(HONESTY_NOTE, style="yellow"))
    return Group(*parts)
