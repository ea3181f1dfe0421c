"""The live view: a snapshot the runtime updates cheaply, a frame rendered from it alone, and the
view running beside a real runtime on a ``perpbot simulate`` child."""

from __future__ import annotations

import asyncio
import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from perpbot.ml.decision import FilterDecision, PassThroughFilter
from perpbot.runtime.live_view import LiveSnapshot, LiveView, render, view_wanted
from tests.runtime.opsenv import TRADED, advance, runtime, trade_until_open
from tests.runtime.simproc import Simulator


def _text(renderable: object, width: int = 200) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_a_frame_shows_each_symbol_the_portfolio_and_recent_alerts() -> None:
    snap = LiveSnapshot.for_symbols(["XRPUSDT", "TRXUSDT"], "DEMO")
    snap.on_candle("XRPUSDT", 1_750_000_000_000, 0.6123, "LONG")
    snap.on_decision("XRPUSDT", True, "accepted", 0.634)
    snap.on_candle("TRXUSDT", 1_750_000_000_000, 0.2711, None)
    snap.on_decision("TRXUSDT", False, "below_threshold", 0.41)
    x = snap.rows["XRPUSDT"]
    x.side, x.qty, x.entry_price, x.sl, x.tp, x.upnl = "LONG", 120.0, 0.61, 0.6, 0.63, 0.276
    snap.rows["TRXUSDT"].kill_switch = "TRIPPED (fast: last 8 trades all net-negative)"
    p = snap.portfolio
    p.base_balance, p.daily_pnl, p.daily_limit, p.positions, p.upnl = 1000.0, -50.0, 50.0, 1, 0.276
    p.updated_ms = 1_750_000_000_000
    snap.on_alert("entry", "**[XRPUSDT] LONG**\nentry 0.61")
    text = _text(render(snap))
    xrp = next(line for line in text.splitlines() if "XRPUSDT" in line and "LONG 120" in line)
    for part in ("0.6123", "LONG", "pass accepted p=0.63", "LONG 120 @ 0.61", "0.6", "0.63", "+0.2760", "ok"):
        assert part in xrp
    trx = next(line for line in text.splitlines() if line.startswith("│ TRXUSDT") or " TRXUSDT " in line)
    for part in ("0.2711", "HOLD", "reject below_threshold p=0.41", "flat", "TRIPPED (fast"):
        assert part in trx
    assert (
        "portfolio DEMO: positions 1, unrealised +0.2760, today realised -50.0000 (limit -50.00, ENTRIES"
        in text
    )
    assert "at 2025-06-15 15:06:40 UTC" in text
    assert "[entry] **[XRPUSDT] LONG** entry 0.61" in text  # one line per alert


def test_only_the_last_alerts_are_kept_and_an_empty_view_says_none() -> None:
    snap = LiveSnapshot.for_symbols(["XRPUSDT"])
    assert "  none" in _text(render(snap))
    for i in range(10):
        snap.on_alert("info", f"alert {i}")
    text = _text(render(snap))
    assert "alert 3" not in text and all(f"alert {i}" in text for i in range(4, 10))


def test_the_filter_and_notifier_hooks_forward_and_record() -> None:
    class Model:
        has_model = True

        def maybe_reload(self) -> None:
            self.reloaded = True

        def decide(self, x: np.ndarray) -> FilterDecision:
            return FilterDecision(
                bool(x[0] > 0.5), float(x[0]), "lgbm", "accepted" if x[0] > 0.5 else "below"
            )

    view = LiveView(LiveSnapshot.for_symbols(["XRPUSDT", "TRXUSDT"]), Console(file=io.StringIO()))
    f = view.watch_filter("XRPUSDT", Model())
    assert f.has_model and f.decide(np.array([0.7])).allowed
    assert view.snapshot.rows["XRPUSDT"].filter == "pass accepted p=0.70"
    assert not f.decide(np.array([0.2])).allowed
    assert view.snapshot.rows["XRPUSDT"].filter == "reject below p=0.20"
    view.watch_filter("TRXUSDT", PassThroughFilter())
    assert view.snapshot.rows["TRXUSDT"].filter == "off"


def test_the_view_is_drawn_only_on_a_terminal_and_never_with_quiet() -> None:
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        assert view_wanted(False, tty)
        assert not view_wanted(True, tty)
    os.close(master)
    assert not view_wanted(False, io.StringIO())


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator([*TRADED, "BTCUSDT", "ETHUSDT"], 3)
    yield s
    s.stop()


async def test_the_view_follows_a_running_runtime(sim: Simulator, tmp_path: Path) -> None:
    out = io.StringIO()
    view = LiveView(LiveSnapshot.for_symbols(TRADED, "custom"), Console(file=out, width=220))
    rt = runtime(sim, tmp_path / "journal.sqlite3", view=view)
    t0 = time.monotonic()
    await rt.start()
    try:
        positions = {p["symbol"]: p for p in await trade_until_open(sim, rt)}
        await asyncio.sleep(0.6)  # a few redraws of the view's own task
        frames = view.frames
        elapsed = time.monotonic() - t0
        assert 1 <= frames <= elapsed * 4 + 1  # at most 4 redraws per second
        text = _text(view.frame(rt), width=220)
        snap = view.snapshot
        for sym in TRADED:
            row = snap.rows[sym]
            assert row.filter == "off"  # no model: the pass-through filter
            assert row.signal in ("LONG", "SHORT", "HOLD") and row.candle_open_ms is not None
            assert row.price is not None and row.price > 0
            line = next(x for x in text.splitlines() if f" {sym} " in x)
            st = rt.bots[sym].state
            if sym in positions:
                pos = positions[sym]
                assert row.side == pos["side"] == st.side.value
                assert row.qty == pytest.approx(float(pos["quantity"]))
                assert (row.sl, row.tp) == (st.sl_price, st.tp_price)
                assert row.upnl == pytest.approx(rt.bots[sym].estimated_pnl(row.price))
                assert f"{pos['side']} {row.qty:g} @" in line and f"{st.sl_price:.6g}" in line
            else:
                assert row.side is None and "flat" in line
            assert line.rstrip(" │").endswith("ok")
        assert snap.portfolio.positions == len(positions)
        assert snap.portfolio.base_balance == rt.risk.base_balance
        assert f"portfolio custom: positions {len(positions)}" in text
        alerts = rt.notifier._inner.messages  # the runtime's own notifier still gets every alert
        assert alerts and len(snap.alerts) == min(len(alerts), snap.alerts.maxlen or 0)
        assert [a[2] for a in snap.alerts] == [t for _, t in alerts][-len(snap.alerts) :]

        before = {s: view.snapshot.rows[s].candle_open_ms for s in TRADED}
        await advance(sim, rt, 1)
        for s in TRADED:  # the per-candle hook: the next closed candle, 15 minutes later
            assert view.snapshot.rows[s].candle_open_ms == (before[s] or 0) + 900_000
    finally:
        await rt.stop()
    assert any("portfolio custom" in line for line in out.getvalue().splitlines())  # drawn to its console


def _run_on_a_terminal(sim: Simulator, cwd: Path, *extra: str) -> str:
    """``perpbot run`` with stdout on a pseudo-terminal for a few seconds; what it drew."""
    import select
    import signal
    import subprocess

    from tests.runtime.opsenv import PERPBOT, cli_env

    master, slave = os.openpty()
    cmd = [PERPBOT, "run", "--journal", str(cwd / "j.sqlite3"), "--no-ml", "--connect-attempts", "2", *extra]
    proc = subprocess.Popen(
        cmd, env={**cli_env(sim), "COLUMNS": "200"}, cwd=cwd, stdout=slave, stderr=subprocess.PIPE
    )
    os.close(slave)
    seen = b""
    try:
        end = time.monotonic() + 45
        while time.monotonic() < end and b"portfolio custom" not in seen:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
            if b"perpbot custom: XRPUSDT, TRXUSDT" in seen and extra:
                time.sleep(2.0)  # long enough for several frames, had the view been on
                while select.select([master], [], [], 0.2)[0]:
                    seen += os.read(master, 65536)
                break
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        os.close(master)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))  # colours, cursor moves


def test_run_draws_the_view_on_a_terminal_and_not_with_quiet(sim: Simulator, tmp_path: Path) -> None:
    drawn = _run_on_a_terminal(sim, tmp_path)
    assert "portfolio custom: positions 0" in drawn and "kill switch" in drawn
    quiet = _run_on_a_terminal(sim, tmp_path, "--quiet")
    assert "perpbot custom: XRPUSDT, TRXUSDT" in quiet
    assert "portfolio custom" not in quiet
