"""Equity charts: drawn from the decimated series, extremes included, deterministic HTML."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from perpbot.backtest.charts import equity_html_text, equity_png_bytes
from perpbot.backtest.metrics import summarize

BAR = 900_000


def _year_report():  # type: ignore[no-untyped-def]
    n = 35_040
    t = 1_700_000_000_000 + BAR * np.arange(1, n + 1, dtype=np.int64)
    closes = {"XRPUSDT": 0.5 + 0.01 * np.sin(np.arange(n) / 500.0)}
    rep = summarize([], ["XRPUSDT"], t, closes, 1000.0, start_ms=int(t[0] - BAR), end_ms=int(t[-1]))
    eq = rep.portfolio_curve.equity
    eq += np.cumsum(np.random.default_rng(1).normal(0, 0.5, n))
    eq[20_000] = 1_777.25  # one-candle spike: must be on the chart
    return rep


def _traces(html: str) -> list[dict]:
    m = re.search(r'Plotly\.newPlot\(\s*"equity",\s*(\[.*?\]),\s*\{', html, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_html_is_decimated_keeps_the_spike_and_is_deterministic() -> None:
    rep = _year_report()
    marks = [(int(rep.portfolio_curve.time_ms[100]), "XRPUSDT kill switch")]
    html = equity_html_text(rep, "t", marks)
    traces = _traces(html)
    assert [t["name"] for t in traces] == ["portfolio", "XRPUSDT", "drawdown %"]
    portfolio = traces[0]
    assert len(portfolio["y"]) < 10_000 < rep.portfolio_curve.equity.size
    assert max(portfolio["y"]) == 1_777.25
    assert min(portfolio["y"]) == rep.portfolio_curve.equity.min()
    assert portfolio["x"][0].startswith("2023-11-14T22:")  # datetimes, not epoch numbers
    assert "XRPUSDT kill switch" in html
    assert html == equity_html_text(rep, "t", marks)


def test_png_renders() -> None:
    png = equity_png_bytes(_year_report(), "t")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def _png_digest_in_a_fresh_process(first_import: str) -> str:
    code = (
        "import hashlib, sys\n"
        f"{first_import}\n"
        "import matplotlib.artist\n"
        "assert matplotlib.artist.kwdoc.__name__ == 'kwdoc'  # restored after the import\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_charts import _year_report\n"
        "from perpbot.backtest.charts import equity_png_bytes\n"
        "print(hashlib.sha256(equity_png_bytes(_year_report(), 't')).hexdigest())\n"
    )
    here = str(Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", code, here], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_matplotlib_loaded_without_its_set_docstrings_draws_the_same_bytes() -> None:
    # charts.load_matplotlib skips the artists' set() docstrings while matplotlib loads (start-up
    # of the chart worker): the PNG is byte for byte the one of a plain import.
    plain = _png_digest_in_a_fresh_process("import matplotlib.figure, matplotlib.backends.backend_agg")
    light = _png_digest_in_a_fresh_process(
        "from perpbot.backtest.charts import load_matplotlib; load_matplotlib()"
    )
    assert len(plain) == 64 and light == plain
