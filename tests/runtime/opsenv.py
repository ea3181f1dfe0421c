"""Shared set-up of the operator-command and live-view tests: a runtime trading against a
``perpbot simulate`` child until it holds a position (``trading_runtime``), and the operator CLI
as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from perpbot.config import load_config
from perpbot.engine.notifier import RecordingNotifier
from perpbot.runtime.app import Runtime
from perpbot.runtime.live_view import LiveView
from tests.runtime.simproc import Simulator
from tests.support.async_timeout import await_chain
from tests.support.runtime import loopback_env, loopback_options

TRADED = ["XRPUSDT", "TRXUSDT"]
PERPBOT = str(Path(sys.executable).with_name("perpbot"))
# Bounds of the harness's waits (generous: a loaded CI host). Every job of the runtime is bounded
# on its own (wall-clock waits, HTTP timeouts), so running into one of these is a finding.
CANDLE_S = 60.0
JOIN_S = 120.0


def settings(sim: Simulator) -> dict[str, str]:
    return loopback_env(sim, tuple(TRADED))


def cli_env(sim: Simulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE", "PERPBOT", "SYMBOL"))}
    return {**env, **settings(sim), **extra}


def inject_faults(sim: Simulator, faults: list[dict[str, object]]) -> None:
    """``POST /sim/faults`` (blocking: call it through ``asyncio.to_thread``)."""
    req = urllib.request.Request(sim.http + "/sim/faults", data=json.dumps(faults).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def runtime(sim: Simulator, journal: Path, *, view: LiveView | None = None) -> Runtime:
    cfg = load_config(settings(sim), env_file=None)
    opts = loopback_options(journal)
    return Runtime(cfg, opts, out=lambda _line: None, notifier=RecordingNotifier(), view=view)


async def advance(sim: Simulator, rt: Runtime, bars: int) -> None:
    """Advance the replay bar by bar; each bar handled by every traded symbol's worker."""
    for _ in range(bars):
        before = {s: rt.candles_handled[s] for s in TRADED}
        await asyncio.to_thread(sim.advance, 1)
        deadline = time.monotonic() + CANDLE_S
        while not all(rt.candles_handled[s] > before[s] for s in TRADED):
            if time.monotonic() > deadline:
                late = [s for s in TRADED if rt.candles_handled[s] <= before[s]]
                raise AssertionError(f"no candle handled within {CANDLE_S:g} s of the advance by {late}")
            await asyncio.sleep(0.01)
        await joined(rt)


async def joined(rt: Runtime, timeout_s: float = JOIN_S) -> None:
    """Every worker's queued jobs handled; else an AssertionError naming each busy worker and
    where its job waits (``join`` alone would wait forever on a stuck job)."""
    waits = {s: asyncio.ensure_future(w.join()) for s, w in rt.workers.items()}
    _, pending = await asyncio.wait(waits.values(), timeout=timeout_s)
    if not pending:
        return
    lines = []
    for sym, fut in waits.items():
        if fut in pending:
            fut.cancel()
            w = rt.workers[sym]
            task = getattr(w, "_task", None)
            chain = await_chain(task.get_coro()) if task is not None and not task.done() else ["  (no task)"]
            lines.append(f"{sym}: {w.pending} job(s) not done, alive={w.alive}; its job waits in:")
            lines.extend(chain)
    raise AssertionError(f"workers still busy after {timeout_s:g} s:\n" + "\n".join(lines))


async def lose_stop_loss_slowly(
    sim: Simulator, rt: Runtime, sym: str, slow_ms: int, *, slow_post: bool = False
) -> None:
    """Someone (the web UI, another tool) cancels ``sym``'s stop-loss while the venue answers the
    bot's protection check slowly (a congested host; with ``slow_post``, its new order too):
    returns once the bot is re-placing it."""
    bot = rt.bots[sym]
    sl_id = bot.state.sl_id
    assert sl_id
    fault = {"kind": "latency", "ms": slow_ms, "endpoint": "/fapi/v1/openAlgoOrders", "symbol": sym}
    await asyncio.to_thread(inject_faults, sim, [fault])
    await rt.exchange.cancel_conditional(sym, sl_id)
    if slow_post:  # after the cancel, which the same path (DELETE) would slow down too
        fault = {"kind": "latency", "ms": slow_ms, "endpoint": "/fapi/v1/algoOrder", "symbol": sym}
        await asyncio.to_thread(inject_faults, sim, [fault])
    for _ in range(500):
        if bot.has_background:
            break
        await asyncio.sleep(0.01)
    assert bot.has_background, "the bot must be re-placing the lost stop-loss"


async def protected_positions(sim: Simulator) -> list[dict[str, object]]:
    """The simulator's open positions once each carries its SL and TP (bounded wait)."""
    for _ in range(100):
        state = await asyncio.to_thread(sim.state)
        positions = state["positions"]
        kinds = {
            p["symbol"]: sorted(a["orderType"] for a in state["algo_orders"] if a["symbol"] == p["symbol"])
            for p in positions
        }
        if all(k == ["STOP_MARKET", "TAKE_PROFIT_MARKET"] for k in kinds.values()):
            return list(positions)
        await asyncio.sleep(0.05)
    raise AssertionError(f"positions without protection: {kinds}")


async def trade_until_open(sim: Simulator, rt: Runtime, max_bars: int = 160) -> list[dict[str, object]]:
    """Advance until the runtime holds at least one protected position; its positions."""
    for _ in range(0, max_bars, 4):
        await advance(sim, rt, 4)
        positions = await protected_positions(sim)
        if positions:
            return positions
    raise AssertionError("loose parameters must open a position on this market")


@asynccontextmanager
async def trading_runtime(
    sim: Simulator, journal: Path, *, trade: bool = True
) -> AsyncIterator[tuple[Runtime, dict[str, dict[str, object]]]]:
    """A started runtime on ``journal`` and, with ``trade``, its protected positions by symbol once
    it holds at least one (``trade_until_open``); stopped on the way out, even on a failure."""
    rt = runtime(sim, journal)
    await rt.start()
    try:
        positions = {str(p["symbol"]): p for p in await trade_until_open(sim, rt)} if trade else {}
        yield rt, positions
    finally:
        await rt.stop()


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PERPBOT, *args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120
    )
