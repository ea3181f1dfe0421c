"""What the chart worker does until the run's jobs arrive, and how it reads what comes first.

Why (issue 13, the charts after the run): the worker is idle on the second core while the
parent runs the backtest loop. It warms up (``warm_up``), builds the PNGs' figures
(``figure_stash.build_ahead``) and, once the parent has sent the trade charts' candles (known
before the loop: ``ChartPool.send_ahead``), draws them into trade figures; every step stops as
soon as the job batch is waiting, so the jobs never wait for work done ahead.

Messages before the batch: candles sent ahead (an ``array_file``, ``encode_candles``), then the
batch's head, the number of jobs in ASCII digits. The parent imports this module (not
``chart_jobs``) just before its first candle: light on purpose.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from perpbot.backtest import array_file
from perpbot.backtest.candle_bars import CANDLE_FIELDS, PNG_CANDLES, Candles, aggregate
from perpbot.backtest.chart_pool import readable, recv


def warm_up(stop: Callable[[], bool] = lambda: False) -> int:
    """Import the plotting libraries and draw one tiny page of each HTML kind (not written), the
    drawing only until ``stop()`` is true; returns how many were drawn.

    Why only the HTML kinds: a tiny chart costs about what a real one does (the figure, axes and
    ticks, not the points), and only a first draw that loads something pays back. An HTML page's
    first draw loads plotly's template and bundle (~0.05 s saved on the first real page,
    measured); a tiny PNG saved nothing measurable once matplotlib is imported (its first real
    PNG cost the same) but cost ~0.1 s CPU, on a 2-core machine that the parent or a second
    drawing process needed (issue 13). Why stoppable: when the run's jobs are already waiting
    the worker draws them instead of throwaway pages."""
    import numpy as np

    from perpbot.backtest.candle_bars import Candles
    from perpbot.backtest.chart_jobs import draw, equity_jobs, trade_jobs
    from perpbot.backtest.charts import EquityChart, Series, load_matplotlib
    from perpbot.backtest.trade_chart import TradeChart
    from perpbot.domain.types import ClosedTrade, CloseReason, Side

    t = 1_700_000_000_000 + 900_000 * np.arange(4, dtype=np.int64)
    v = np.array([1.0, 2.0, 1.5, 3.0])
    s = Series(t, v)
    eq = EquityChart("warm-up", ((int(t[1]), "X kill switch"),), s, Series(t, -v), {"X": s})
    trade = ClosedTrade(
        "X", Side.LONG, int(t[0]), int(t[2]), 1.0, 1.5, 1.0, 0.5, 0.0, 0.0, 0.0, CloseReason.TP
    )
    tc = TradeChart("X", Candles(t, v, v + 0.5, v - 0.5, v), (trade,), (), ())
    drawn = 0
    load_matplotlib()  # the real PNG jobs come first (costliest first): matplotlib before anything
    _, eq_html = equity_jobs(eq, Path("x.png"), Path("x.html"))
    _, tr_html = trade_jobs(tc, Path("x"))
    for job in (tr_html, eq_html):
        if stop():
            break
        draw(job)
        drawn += 1
    return drawn


class Inbox:
    """The worker's reading end before the batch: candles are kept as they come, the batch's
    head is kept for the caller."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.head: bytes | None = None
        self.closed = False  # the parent closed its end first (it failed or is gone)
        self.candles: list[dict[str, Candles]] = []

    def jobs_waiting(self) -> bool:
        """Take in whatever has arrived; true once the batch's head (or the end) is here."""
        while self.head is None and not self.closed and readable(self.fd):
            self._take(recv(self.fd))
        return self.head is not None or self.closed

    def wait(self) -> None:
        """Block until something arrives, then take it in."""
        select.select([self.fd], [], [])
        self.jobs_waiting()

    def _take(self, msg: bytes | None) -> None:
        if msg is None:
            self.closed = True
        elif msg[:1].isdigit():
            self.head = msg
        else:
            self.candles.append(decode_candles(msg))


def work_ahead(inbox: Inbox, ahead: Sequence[str]) -> None:
    """Warm up, build the ``ahead`` figures, draw candles sent ahead into trade figures (each
    step until the jobs wait), then wait for the batch, drawing candles that come meanwhile."""
    from perpbot.backtest.figure_stash import build_ahead, build_candles_ahead

    warm_up(stop=inbox.jobs_waiting)
    if ahead:
        build_ahead(ahead, stop=inbox.jobs_waiting)
    while True:
        while inbox.candles and not inbox.jobs_waiting():
            build_candles_ahead(inbox.candles.pop(0), stop=inbox.jobs_waiting)
        if inbox.jobs_waiting():
            return
        inbox.wait()


def fits_in_pipe(fd: int, n: int) -> bool:
    """An empty pipe ``fd`` takes ``n`` bytes without blocking the writer: its buffer is grown to
    hold them where the system allows it (Linux ``F_SETPIPE_SZ``); False elsewhere."""
    try:
        import fcntl

        size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        if size < n:
            size = fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, n)
    except (ImportError, AttributeError, OSError, OverflowError):  # not Linux, or too large
        return False
    return size >= n


def encode_candles(candles: Mapping[str, Candles]) -> bytes:
    """Each symbol's candles, merged as its trade PNG draws them (``trade_chart.aggregate``), as
    the bytes ``ChartPool.send_ahead`` sends."""
    arrays = {}
    for k, c in enumerate(candles.values()):
        merged = aggregate(c, PNG_CANDLES)
        arrays.update({f"{k}.{f}": a for f, a in zip(CANDLE_FIELDS, merged.columns(), strict=True)})
    return array_file.dumps({"kind": "candles_ahead", "symbols": list(candles)}, arrays)


def decode_candles(blob: bytes) -> dict[str, Candles]:
    """The candles ``encode_candles`` wrote (``array_file.BadArrayFile`` when it is not that)."""
    head, arrays = array_file.loads(blob)
    if head.get("kind") != "candles_ahead":
        raise array_file.BadArrayFile(f"not candles sent ahead: {head.get('kind')!r}")
    return {
        sym: Candles(*(arrays[f"{k}.{f}"] for f in CANDLE_FIELDS)) for k, sym in enumerate(head["symbols"])
    }
