"""The live terminal view of ``perpbot run`` and ``perpbot paper`` (issue 10 §1-2), drawn with rich.

Why a snapshot object between the runtime and the screen: the trading path must not pay for
rendering. The runtime only makes cheap state updates (``on_candle``: a few attribute writes per
candle; ``on_decision`` per filter decision; ``on_alert`` per alert), and everything else (bot
positions, prices, the day's PnL) is *pulled* by the view's own task at its refresh
(``LiveSnapshot.refresh``), at most ``MAX_REFRESH_HZ`` times a second. Rendering reads only the
snapshot, so a frame can be drawn and tested without a runtime (``render``).

The view is off with ``--quiet`` and whenever stdout is not a terminal (``view_wanted``): logs
and pipes get plain lines, never cursor movements.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

MAX_REFRESH_HZ = 4.0
ALERTS_SHOWN = 6


@dataclass(slots=True)
class SymbolRow:
    """One symbol's line of the view."""

    symbol: str
    price: float | None = None
    candle_open_ms: int | None = None
    signal: str = "-"  # LONG / SHORT / HOLD of the last closed candle
    filter: str = "-"  # the entry filter's last decision ("off" without a model)
    side: str | None = None
    qty: float = 0.0
    entry_price: float = 0.0
    sl: float = 0.0
    tp: float = 0.0
    upnl: float | None = None
    kill_switch: str = "ok"


@dataclass(slots=True)
class Portfolio:
    mode: str = ""
    base_balance: float = 0.0
    daily_pnl: float = 0.0
    daily_limit: float = 0.0
    positions: int = 0
    upnl: float = 0.0
    updated_ms: int = 0


@dataclass(slots=True)
class LiveSnapshot:
    """What the view shows; updated cheaply by the runtime, completed by ``refresh``."""

    rows: dict[str, SymbolRow]
    portfolio: Portfolio = field(default_factory=Portfolio)
    alerts: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=ALERTS_SHOWN))

    @classmethod
    def for_symbols(cls, symbols: Iterable[str], mode: str = "") -> LiveSnapshot:
        return cls({s: SymbolRow(s) for s in symbols}, Portfolio(mode=mode))

    # ------------------------------------------------------------ runtime hooks (cheap)
    def on_candle(self, symbol: str, open_ms: int, close: float, signal: str | None) -> None:
        row = self.rows.get(symbol)
        if row is not None:
            row.candle_open_ms, row.price, row.signal = open_ms, close, signal or "HOLD"

    def on_decision(self, symbol: str, allowed: bool, reason: str, proba: float | None) -> None:
        row = self.rows.get(symbol)
        if row is not None:
            p = "" if proba is None else f" p={proba:.2f}"
            row.filter = f"{'pass' if allowed else 'reject'} {reason}{p}"

    def on_alert(self, kind: str, text: str) -> None:
        self.alerts.append((time.time(), kind, text))

    # ------------------------------------------------------------ pulled by the view task
    def refresh(self, runtime: Any) -> None:
        """Read the runtime's bots, prices and risk manager (outside the trading path)."""
        from perpbot.config import MAX_DAILY_LOSS

        latest = runtime.feed.latest if runtime.feed is not None else {}
        total = 0.0
        positions = 0
        for sym, bot in runtime.bots.items():
            row = self.rows.setdefault(sym, SymbolRow(sym))
            if sym in latest and latest[sym][0] > 0:
                row.price = float(latest[sym][0])
            st = bot.state
            row.side = None if st.side is None else st.side.value
            row.qty, row.entry_price = st.qty, st.entry_price
            row.sl, row.tp = st.sl_price, st.tp_price
            row.upnl = bot.estimated_pnl(row.price) if row.price else None
            ks = bot.kill_switch
            row.kill_switch = f"TRIPPED ({ks.reason})" if ks.tripped else "ok"
            if row.side is not None:
                positions += 1
                total += row.upnl or 0.0
        p = self.portfolio
        risk = runtime.risk
        if risk is not None:
            p.base_balance, p.daily_pnl = risk.base_balance, risk.daily_pnl
            p.daily_limit = risk.base_balance * MAX_DAILY_LOSS
        p.positions, p.upnl = positions, total
        p.updated_ms = runtime.clock.now_ms()


def _num(v: float | None, fmt: str = ".6g") -> str:
    return "-" if v is None or v == 0 else format(v, fmt)


def _pnl(v: float | None) -> Text:
    if v is None:
        return Text("-")
    return Text(f"{v:+.4f}", style="green" if v >= 0 else "red")


def render(snap: LiveSnapshot) -> RenderableType:
    """One frame: a row per symbol, the portfolio line, the recent alerts."""
    t = Table(expand=False, header_style="bold")
    for col in ("symbol", "price", "signal", "filter", "position", "SL", "TP", "uPnL", "kill switch"):
        t.add_column(col, justify="right" if col in ("price", "SL", "TP", "uPnL") else "left")
    for sym in sorted(snap.rows):
        r = snap.rows[sym]
        pos = "flat" if r.side is None else f"{r.side} {r.qty:g} @ {r.entry_price:.6g}"
        ks = Text(r.kill_switch, style="bold red" if r.kill_switch != "ok" else "")
        t.add_row(sym, _num(r.price), r.signal, r.filter, pos, _num(r.sl), _num(r.tp), _pnl(r.upnl), ks)
    p = snap.portfolio
    blocked = p.daily_limit > 0 and p.daily_pnl < 0 and -p.daily_pnl >= p.daily_limit
    when = "-"
    if p.updated_ms:
        when = datetime.fromtimestamp(p.updated_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    line = Text.assemble(
        (f"portfolio {p.mode}: ", "bold"),
        f"positions {p.positions}, unrealised ",
        _pnl(p.upnl),
        ", today realised ",
        _pnl(p.daily_pnl),
        f" (limit -{p.daily_limit:.2f}{', ENTRIES BLOCKED' if blocked else ''}), ",
        f"base {p.base_balance:.2f} USDT, at {when} UTC",
    )
    alerts = [Text("recent alerts:", style="bold")]
    for ts, kind, text in snap.alerts:
        stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%H:%M:%S")
        alerts.append(Text(f"  {stamp} [{kind}] {' '.join(text.split())}", overflow="ellipsis", no_wrap=True))
    if len(alerts) == 1:
        alerts.append(Text("  none"))
    return Group(t, line, *alerts)


def view_wanted(quiet: bool, stream: IO[str]) -> bool:
    """The view is drawn only on a terminal and only when not ``--quiet``."""
    return not quiet and stream.isatty()


class _ViewNotifier:
    """Forwards every alert to the real notifier and shows it in the view (never blocks)."""

    def __init__(self, inner: Any, snap: LiveSnapshot) -> None:
        self._inner, self._snap = inner, snap

    async def notify(self, kind: str, text: str) -> None:
        self._snap.on_alert(kind, text)
        await self._inner.notify(kind, text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _ViewFilter:
    """Forwards to the entry filter and records each decision (an entry, not a HOLD candle)."""

    def __init__(self, inner: Any, symbol: str, snap: LiveSnapshot) -> None:
        self._inner, self._symbol, self._snap = inner, symbol, snap

    @property
    def has_model(self) -> bool:
        return bool(self._inner.has_model)

    def maybe_reload(self) -> None:
        self._inner.maybe_reload()

    def decide(self, features: Any) -> Any:
        d = self._inner.decide(features)
        self._snap.on_decision(self._symbol, d.allowed, d.reason, d.proba)
        return d

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class LiveView:
    """The runtime's view: a snapshot plus the task that draws it (see the module docstring)."""

    def __init__(self, snapshot: LiveSnapshot, console: Console, *, refresh_s: float = 1 / MAX_REFRESH_HZ):
        self.snapshot = snapshot
        self.console = console
        self.refresh_s = max(refresh_s, 1 / MAX_REFRESH_HZ)
        self.frames = 0

    # hooks the runtime calls
    def on_candle(self, symbol: str, ctx: Any) -> None:
        sig = ctx.signal
        self.snapshot.on_candle(symbol, ctx.open_time_ms, ctx.close, None if sig is None else sig.value)

    def watch_notifier(self, notifier: Any) -> Any:
        return _ViewNotifier(notifier, self.snapshot)

    def watch_filter(self, symbol: str, entry_filter: Any) -> Any:
        if not getattr(entry_filter, "has_model", False):
            self.snapshot.rows.setdefault(symbol, SymbolRow(symbol)).filter = "off"
        return _ViewFilter(entry_filter, symbol, self.snapshot)

    def frame(self, runtime: Any) -> RenderableType:
        self.snapshot.refresh(runtime)
        self.frames += 1
        return render(self.snapshot)

    async def run(self, runtime: Any) -> None:
        """Redraw until cancelled (the runtime's stop), at most ``MAX_REFRESH_HZ`` per second."""
        from rich.live import Live

        with Live(console=self.console, auto_refresh=False, transient=False) as live:
            while True:
                with contextlib.suppress(Exception):  # a bad frame must never hurt the runtime
                    live.update(self.frame(runtime), refresh=True)
                await asyncio.sleep(self.refresh_s)
