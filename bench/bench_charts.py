"""Report-chart benchmark (issue 13 target: both equity charts, PNG + HTML, in ≤ 0.3 s for a year of
15-minute equity, ~35k points, drawn from a min/max-decimated series).

What is measured: one ML-off backtest of the three symbols (not timed), then, ``--repeat`` times,
``equity_png_bytes`` and ``equity_html_text`` on its report (imports done once beforehand, as in
a run that has already imported the report module), and the per-symbol trades-on-price charts.
Medians are printed with the point count, so the figure can be compared across machines.

Data: ``../shared/data`` (XRPUSDT, TRXUSDT, DOGEUSDT); when absent, 425 synthetic days per
symbol, and the output says so.

Not a test: ``python bench/bench_charts.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("PERPBOT_REAL_DATA") or REPO.parent / "shared" / "data")
SYMBOLS = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")
TARGET_S = 0.3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from perpbot.backtest.charts import equity_html_text, equity_png_bytes
    from perpbot.backtest.runner import BacktestConfig, load_markets, run_backtest
    from perpbot.backtest.trade_chart import candles_in_window, trade_chart_html, trade_chart_png
    from perpbot.config import load_config
    from perpbot.data.synth import synth_market

    real = all((REAL_DATA / s.lower() / "combined_15m.parquet").is_file() for s in SYMBOLS)
    markets = None if real else {s: synth_market(425, 7, symbol=s) for s in SYMBOLS}
    cfg = BacktestConfig(symbols=SYMBOLS, data_dir=REAL_DATA, markets=markets, use_ml=False)
    res = asyncio.run(run_backtest(cfg, load_config(environ={"SYMBOLS": ",".join(SYMBOLS)}, env_file=None)))
    rep, marks = res.metrics, res.markers()
    equity_png_bytes(rep, res.title, marks)  # warm-up: font cache, plotly template
    equity_html_text(rep, res.title, marks)

    png_s, html_s = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        equity_png_bytes(rep, res.title, marks)
        png_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        equity_html_text(rep, res.title, marks)
        html_s.append(time.perf_counter() - t)

    full = load_markets(cfg)
    trade_s = []
    for sym in SYMBOLS:
        c = candles_in_window(full[sym], res.start_ms, res.end_ms)
        mine = [tr for tr in res.trades if tr.symbol == sym]
        t = time.perf_counter()
        trade_chart_png(sym, c, mine)
        trade_chart_html(sym, c, mine)
        trade_s.append(time.perf_counter() - t)

    both = statistics.median(p + h for p, h in zip(png_s, html_s, strict=True))
    print(f"data: {'../shared/data (recorded)' if real else 'synthetic, 425 days'}")
    print(f"equity points per curve: {rep.portfolio_curve.time_ms.size}, symbols: {len(SYMBOLS)}")
    print(f"equity PNG  median {statistics.median(png_s):.3f} s")
    print(f"equity HTML median {statistics.median(html_s):.3f} s")
    verdict = "OK" if both <= TARGET_S else "ABOVE TARGET"
    print(f"both equity charts median {both:.3f} s (target <= {TARGET_S} s): {verdict}")
    print(f"trades-on-price PNG+HTML per symbol: {', '.join(f'{s:.3f} s' for s in trade_s)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
