"""The runtime trading through the live Binance adapter against ``perpbot simulate`` on loopback
(real HTTP and WebSocket, a real child process), replay advanced bar by bar."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from perpbot.config import load_config
from perpbot.data.synth import synth_market
from perpbot.engine.notifier import RecordingNotifier
from perpbot.errors import PerpbotError
from perpbot.exchange.binance.checks import SetupError
from perpbot.exchange.binance.ws import StreamSettings
from perpbot.runtime.app import Runtime
from perpbot.runtime.guard import JournalLock
from perpbot.runtime.micro_seed import SEED_BARS
from perpbot.simulator.market import HISTORY_DAYS
from tests.runtime.opsenv import advance
from tests.runtime.simproc import Simulator
from tests.support.runtime import loopback_env, loopback_options
from tests.support.silent_server import silent_server

TRADED = ["XRPUSDT", "TRXUSDT"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    s = Simulator([*TRADED, "BTCUSDT", "ETHUSDT"], 3)
    yield s
    s.stop()


def _runtime(sim: Simulator, journal: Path, lines: list[str]) -> Runtime:
    cfg = load_config(loopback_env(sim, tuple(TRADED)), env_file=None)
    opts = loopback_options(journal, heartbeat_s=2.0)
    return Runtime(cfg, opts, out=lines.append, notifier=RecordingNotifier())


async def _advance(sim: Simulator, rt: Runtime, bars: int) -> None:
    """Each bar handled by both workers before the next (``opsenv.advance``). The wait here once
    compared each symbol's running count with the bar's index within the call, which is true
    from the second call on, so the test only waited on jobs already queued."""
    await advance(sim, rt, bars)


def _unprotected(state: dict) -> list[dict]:
    """Positions without exactly one STOP_MARKET and one TAKE_PROFIT_MARKET for their quantity."""
    out = []
    for pos in state["positions"]:
        algos = [a for a in state["algo_orders"] if a["symbol"] == pos["symbol"]]
        kinds = sorted(a["orderType"] for a in algos)
        full = all(a["quantity"] == pos["quantity"] for a in algos)
        if kinds != ["STOP_MARKET", "TAKE_PROFIT_MARKET"] or not full:
            out.append(pos)
    return out


async def test_the_runtime_trades_through_the_adapter_and_keeps_every_position_protected(
    sim: Simulator, tmp_path: Path
) -> None:
    lines: list[str] = []
    journal = tmp_path / "journal.sqlite3"
    rt = _runtime(sim, journal, lines)
    await rt.start()
    try:
        assert lines[0].startswith("perpbot custom: XRPUSDT, TRXUSDT on Binance custom")
        for sym in TRADED:  # the last 499 preloaded candles carry the venue's OI and funding
            frame = rt.window.frame(sym)
            recorded = synth_market(days=3 + HISTORY_DAYS, seed=7, symbol=sym).loc[frame.index]
            n = SEED_BARS
            assert (frame["oi_change"].iloc[:-n] == 0.0).all() and (
                frame["funding_rate"].iloc[:-n] == 0.0
            ).all()
            # The venue serves OI levels to 0.001 contract: each change agrees to ~1e-11.
            np.testing.assert_allclose(
                frame["oi_change"].iloc[-n:], recorded["oi_change"].iloc[-n:], rtol=0, atol=1e-9
            )
            assert (frame["funding_rate"].iloc[-n:] == recorded["funding_rate"].iloc[-n:]).all()
            assert rt.prev_oi[sym] > 0  # the last close's snapshot: the first live change is real
        with pytest.raises(Exception, match="journal in use"):
            JournalLock(journal).acquire()
        # Flat at start: leverage and ISOLATED are set before any signal (not by the first entry).
        for sym in TRADED:
            (row,) = await rt.exchange.rest.call("fapiPrivateV2GetPositionRisk", {"symbol": sym})
            assert (int(row["leverage"]), row["marginType"]) == (rt.cfg.leverage, "isolated")
        for _ in range(20):
            await _advance(sim, rt, 8)
            # Protective orders are placed right after the entry fill's event: within 5 s of wall
            # time (the chaos test's bound), however loaded the machine is.
            for _ in range(50):
                state = await asyncio.to_thread(sim.state)
                if not _unprotected(state):
                    break
                await asyncio.sleep(0.1)
            assert not _unprotected(state), state
        assert all(rt.candles_handled[s] == 160 for s in TRADED), rt.candles_handled
        assert sum(rt.signals.values()) > 0
        trades = [t for b in rt.bots.values() for t in b.closed_trades]
        assert trades, "loose parameters must trade on this market"
        assert all(b.errors == 0 for b in rt.bots.values())
        assert rt.window.align_timeouts == 0
        assert any(line.startswith("heartbeat custom: symbols 2") for line in lines)
        # every fill on the simulator belongs to a trade or to a position still open
        state = await asyncio.to_thread(sim.state)
        open_entries = len(state["positions"])
        assert state["fill_count"] == 2 * len(trades) + open_entries
    finally:
        await rt.stop()
    JournalLock(journal).acquire().release()  # the lock is released on stop
    state = await asyncio.to_thread(sim.state)
    for pos in state["positions"]:  # protection stays on the exchange after a stop
        assert sorted(a["orderType"] for a in state["algo_orders"] if a["symbol"] == pos["symbol"]) == [
            "STOP_MARKET",
            "TAKE_PROFIT_MARKET",
        ]


async def test_a_graceful_stop_is_bounded_when_a_candle_job_never_ends(
    sim: Simulator, tmp_path: Path
) -> None:
    """SIGTERM must stop a live process even when a job is stuck: after ``drain_s`` the job is
    cancelled (its clean-up runs), the operator is alerted, and the journal and its lock are
    released as in any stop; the other symbol's worker stops normally."""
    journal = tmp_path / "journal.sqlite3"
    cfg = load_config(loopback_env(sim, tuple(TRADED)), env_file=None)
    notifier = RecordingNotifier()
    rt = Runtime(cfg, loopback_options(journal, drain_s=0.5), out=lambda _l: None, notifier=notifier)
    await rt.start()
    cleaned: list[str] = []

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("XRPUSDT")

    rt.workers["XRPUSDT"].submit(stuck)
    await asyncio.wait_for(rt.stop(), 60)
    assert cleaned == ["XRPUSDT"]
    (text,) = [t for t in notifier.texts("alert") if t.startswith("stop:")]
    assert "still running after 0.5 s were cancelled: XRPUSDT (1)" in text
    assert "protective orders stay on the exchange" in text
    assert rt.journal is None
    JournalLock(journal).acquire().release()  # the lock is free again


async def test_start_up_fails_closed_when_the_user_stream_never_connects(
    sim: Simulator, tmp_path: Path
) -> None:
    """The venue answers REST but its WebSocket endpoint never completes the upgrade: start-up
    stops at the user stream (before any bot, any preload, any order) with one ``SetupError``
    line (exit status 2 at the CLI), and releases what it opened (journal lock, streams)."""
    journal = tmp_path / "journal.sqlite3"
    async with silent_server() as (port, accepted):
        cfg = load_config(
            loopback_env(sim, tuple(TRADED), BINANCE_WS_URL=f"ws://127.0.0.1:{port}"), env_file=None
        )
        hung = StreamSettings(connect_timeout_s=0.2, backoff_s=0.05, backoff_max_s=0.1, first_connect_s=1.0)
        rt = Runtime(
            cfg, loopback_options(journal, user_stream=hung), out=[].append, notifier=RecordingNotifier()
        )
        with pytest.raises(
            SetupError, match=f"user-data stream at ws://127.0.0.1:{port} did not connect"
        ) as err:
            await rt.start()
    assert isinstance(err.value, PerpbotError) and err.value.exit_code == 2
    assert accepted and not rt.bots and not rt.started.is_set()
    assert not [t for t in asyncio.all_tasks() if t.get_name() in ("ws-user", "listen-key")]
    JournalLock(journal).acquire().release()  # the lock was released
    state = await asyncio.to_thread(sim.state)
    assert state["fill_count"] == 0 and not state["open_orders"] and not state["algo_orders"]
