"""Report files: written, with the documented columns and keys, strict JSON, non-trivial charts."""

from __future__ import annotations

import asyncio
import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from perpbot.backtest.metrics import summarize
from perpbot.backtest.report import (
    HONESTY_NOTE,
    TRADE_COLUMNS,
    iso_utc,
    summary_renderable,
    write_report,
)
from perpbot.backtest.runner import BacktestConfig, BacktestResult, run_backtest
from perpbot.fileio import jsonable

from .conftest import SYMS4, loose_config


@pytest.fixture(scope="module")
def result(markets4: dict[str, pd.DataFrame]) -> BacktestResult:
    cfg = BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=False)
    return asyncio.run(run_backtest(cfg, loose_config(SYMS4)))


def _strict_json(path: Path) -> dict:
    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)


def test_report_files(tmp_path: Path, result: BacktestResult) -> None:
    out = tmp_path / "nested" / "out"
    files = write_report(out, result.trades, result.metrics, result.parameters(), title=result.title)
    assert files.out_dir == out

    with files.trades_csv.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == TRADE_COLUMNS
    assert len(rows) - 1 == len(result.trades) > 0
    first, t = dict(zip(rows[0], rows[1], strict=True)), result.trades[0]
    assert first["symbol"] == t.symbol and first["side"] == t.side.value and first["reason"] == t.reason.value
    assert first["entry_time"] == iso_utc(t.entry_time_ms) and first["entry_time"].endswith("Z")
    assert float(first["net_pnl"]) == t.net_pnl  # repr round-trips exactly
    assert float(first["fees"]) == pytest.approx(t.entry_fee + t.exit_fee)

    doc = _strict_json(files.metrics_json)
    assert {"fingerprint", "portfolio", "per_symbol", "parameters", "definitions", "honesty_note"} <= set(doc)
    assert doc["fingerprint"] == result.fingerprint
    assert doc["honesty_note"] == HONESTY_NOTE and "unproven" in HONESTY_NOTE
    assert set(doc["per_symbol"]) == set(SYMS4)
    for key in (
        "trades",
        "win_rate",
        "profit_factor",
        "net_pnl",
        "fees",
        "funding",
        "max_drawdown",
        "max_drawdown_pct",
        "sharpe",
        "exposure",
        "avg_trade",
    ):
        assert key in doc["portfolio"], key
    assert doc["parameters"]["symbols"] == list(SYMS4)
    assert doc["parameters"]["use_ml"] is False

    png = files.equity_png.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    html = files.equity_html.read_text(encoding="utf-8")
    assert len(html) > 1_000_000  # plotly.js inlined: opens offline
    assert "Plotly.newPlot" in html or "plotly" in html.lower()
    assert "<script src=" not in html  # no external script: the library is inline
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_empty_run_report(tmp_path: Path) -> None:
    t = np.arange(1, 97) * 900_000
    rep = summarize([], ["XRPUSDT"], t, {"XRPUSDT": np.ones(96)}, 1000.0, start_ms=0, end_ms=int(t[-1]))
    files = write_report(tmp_path, [], rep, {"symbols": ["XRPUSDT"]})
    doc = _strict_json(files.metrics_json)
    assert doc["portfolio"]["trades"] == 0
    assert doc["portfolio"]["profit_factor"] is None and doc["portfolio"]["sharpe"] is None
    assert files.trades_csv.read_text().strip() == ",".join(TRADE_COLUMNS)
    assert files.equity_png.stat().st_size > 5_000


def test_jsonable() -> None:
    doc = jsonable({"a": math.inf, "b": [np.float64("nan"), np.int64(3)], "c": Path("x"), 1: (1.5,)})
    assert doc == {"a": None, "b": [None, 3], "c": "x", "1": [1.5]}
    json.dumps(doc, allow_nan=False)


def test_summary_table_renders(tmp_path: Path, result: BacktestResult) -> None:
    console = Console(record=True, width=160)
    console.print(summary_renderable(result.metrics, None, "title"))
    text = console.export_text()
    assert "PORTFOLIO" in text and all(s in text for s in SYMS4)
    assert result.fingerprint in text
    assert "unproven" in text
    assert len(text.splitlines()) < 40  # one screen


def test_trades_csv_prices_rounded_to_the_tick() -> None:
    from perpbot.backtest.report import trades_csv_text
    from perpbot.domain.types import ClosedTrade, CloseReason, Side

    t = ClosedTrade(
        "XRPUSDT",
        Side.LONG,
        0,
        900_000,
        0.512345678,
        0.5299999999,
        10.0,
        0.1765,
        0.01,
        0.01,
        0.0,
        CloseReason.TP,
    )
    rows = list(csv.DictReader(trades_csv_text([t], {"XRPUSDT": 0.0001}).splitlines()))
    assert rows[0]["entry_price"] == "0.5123" and rows[0]["exit_price"] == "0.53"
    assert float(rows[0]["net_pnl"]) == t.net_pnl  # money figures stay exact
    raw = list(csv.DictReader(trades_csv_text([t]).splitlines()))
    assert raw[0]["entry_price"] == repr(0.512345678)  # without a tick: unrounded


def test_summary_states_capital_units_and_trader_figures(result: BacktestResult) -> None:
    console = Console(width=80, record=True, soft_wrap=True)
    console.print(summary_renderable(result.metrics, None, "title", sim=result.sim))
    text = console.export_text()
    assert "capital: 1,000.00 USDT at the start" in text and "in USDT" in text
    for col in ("L/S", "CAGR", "Sortino", "Calmar", "B&H", "exposure"):
        assert col in text
    table_lines = [line for line in text.splitlines() if "%" in line and "PORTFOLIO" in line]
    assert len(table_lines) == 2 and all(len(line) <= 80 for line in table_lines)
