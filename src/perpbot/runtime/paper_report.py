"""What ``perpbot paper`` writes into ``--out``: ``trades.csv`` (the backtest's canonical trade
lines), ``metrics.json`` with the fingerprint, and the journal (written during the run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from perpbot.backtest.metrics import canonical_trade_line, fingerprint
from perpbot.fileio import atomic_write_text, jsonable

TRADE_HEADER = (
    "symbol,side,entry_time_ms,exit_time_ms,entry_price,exit_price,quantity,realized_pnl,"
    "entry_fee,exit_fee,funding,reason"
)


def write_paper_report(out: Path, res: Any) -> list[str]:
    lines = [TRADE_HEADER, *(canonical_trade_line(t) for t in res.trades)]
    atomic_write_text(out / "trades.csv", "\n".join(lines) + "\n")
    fp = fingerprint(res.trades)
    metrics = {
        "mode": "paper",
        "fingerprint": fp,
        "trades": len(res.trades),
        "start_ms": res.start_ms,
        "end_ms": res.end_ms,
        "candles": res.steps,
        "reconciles": res.reconciles,
        "final_balance": res.final_balance,
        "bot_errors": res.bot_errors,
        "align_timeouts": res.align_timeouts,
        "alerts": len(res.alerts),
    }
    atomic_write_text(out / "metrics.json", json.dumps(jsonable(metrics), indent=2, allow_nan=False) + "\n")
    return [
        f"paper: {len(res.trades)} trades over {res.steps} candles, "
        f"final balance {res.final_balance:.2f} USDT",
        f"paper: fingerprint {fp}",
        f"paper: report in {out} (trades.csv, metrics.json, journal.sqlite3)",
    ]
