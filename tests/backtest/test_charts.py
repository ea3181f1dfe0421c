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


def test_html_page_is_plotlys_own_page_byte_for_byte() -> None:
    # charts.html_page splices the bundle's cached UTF-8 bytes where plotly lays out a mark: the
    # page must be exactly what plotly's to_html writes (title with non-ASCII text and a NUL,
    # which the figure's JSON escapes), and plotly's get_plotlyjs is back in place after.
    import plotly.io as pio
    import plotly.io._html as plotly_html

    from perpbot.backtest.charts import _template, html_page

    data = [{"type": "scatter", "mode": "lines", "x": [1, 2, 3], "y": [0.5, float("nan"), 2.0]}]
    layout = {"title": {"text": "équité \x00 <br><sup>§13</sup>"}, "height": 400}
    real = plotly_html.get_plotlyjs
    page = html_page(data, layout, "same-id")
    assert plotly_html.get_plotlyjs is real
    plain = pio.to_html(
        {"data": data, "layout": {"template": _template("plotly_white"), **layout}},
        include_plotlyjs=True,
        full_html=True,
        validate=False,
        div_id="same-id",
    )
    assert page == plain.encode("utf-8")
    assert page.count(real().encode("utf-8")) == 1


def test_template_read_from_its_file_equals_plotlys_registry_template() -> None:
    # charts._template reads plotly's template file instead of building the registry's Template
    # object (issue 13): what a page embeds must be the registry's to_plotly_json(), whole.
    import plotly.io as pio

    from perpbot.backtest.charts import _template

    assert _template("plotly_white") == pio.templates["plotly_white"].to_plotly_json()


def test_template_comes_from_plotlys_registry_when_its_file_is_missing(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import pkgutil

    import plotly.io as pio

    from perpbot.backtest import charts

    def missing(package: str, resource: str) -> bytes:
        raise FileNotFoundError(resource)

    monkeypatch.setattr(pkgutil, "get_data", missing)
    charts._template.cache_clear()
    try:
        assert charts._template("plotly_white") == pio.templates["plotly_white"].to_plotly_json()
    finally:
        charts._template.cache_clear()


def test_html_page_falls_back_to_plotlys_page_when_the_mark_is_not_found(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Another plotly that no longer reads get_plotlyjs from plotly.io._html: the mark never
    # appears and the page is plotly's own, whole (not a page without its bundle).
    import plotly.io as pio

    from perpbot.backtest import charts

    real = pio.to_html
    calls = []

    def ignores_the_mark(fig, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw)
        return real(fig, **kw) if len(calls) > 1 else "<html>no mark</html>"

    monkeypatch.setattr(pio, "to_html", ignores_the_mark)
    page = charts.html_page([], {"height": 300}, "fallback")
    assert len(calls) == 2 and page.startswith(b"<!doctype html>") and len(page) > 1_000_000
