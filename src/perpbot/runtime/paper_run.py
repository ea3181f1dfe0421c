"""One paper replay, end to end: simulator child, runtime, driver, trades (``perpbot paper``).

Alerts: always recorded in memory (the paper report and the live view read them); with a
Discord webhook configured (``DISCORD_WEBHOOK_URL``, the same setting ``perpbot run`` reads) also
posted, tagged ``[PAPER]``, through the same non-blocking notifier as ``run`` (bounded queue,
bounded drain at stop). Without one, nothing is posted and nothing fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perpbot.alerts.discord import DeliveryPolicy, DeliveryStats, DiscordNotifier
from perpbot.alerts.factory import build_notifier
from perpbot.alerts.fanout import FanOutNotifier
from perpbot.config import AppConfig, load_config
from perpbot.engine.notifier import Notifier, RecordingNotifier
from perpbot.exchange.binance.budget import WeightBudget
from perpbot.exchange.binance.ws import StreamSettings
from perpbot.runtime.app import Runtime, RuntimeOptions
from perpbot.runtime.live_view import LiveView
from perpbot.runtime.paper import PaperDriver, PaperOptions, ReplayClock, start_simulator
from perpbot.simulator.child import SimulatorChild
from perpbot.simulator.weights import PacedReplayClock


@dataclass(slots=True)
class PaperResult:
    trades: list[Any]
    start_ms: int
    end_ms: int
    steps: int
    reconciles: int
    alerts: list[tuple[str, str]] = field(default_factory=list)
    final_balance: float = 0.0
    bot_errors: int = 0
    align_timeouts: int = 0
    # How the waiting went: control reads of the venue's event count, settles that had to end
    # on silence (a count never met), requests the weight budget made wait.
    state_reads: int = 0
    fallbacks: int = 0
    weight_waits: int = 0
    wall_s: float = 0.0
    preloaded: dict[str, int] = field(default_factory=dict)  # history candles per streamed symbol
    # Discord delivery of the alerts (None: no webhook configured); final once the run stopped.
    alert_delivery: DeliveryStats | None = None


def paper_config(base_env: dict[str, str], sim: SimulatorChild) -> AppConfig:
    """The same configuration, pointed at the simulator child with its public test keys."""
    env = {**base_env, **sim.env(), "BINANCE_TESTNET": "false"}
    return load_config(env, env_file=None)


def paper_notifier(
    cfg: AppConfig, record: RecordingNotifier, policy: DeliveryPolicy | None = None
) -> tuple[Notifier, DiscordNotifier | None]:
    """``record`` alone, or with a webhook configured ``record`` and Discord tagged ``[PAPER]``
    (every secret of ``cfg`` redacted, as in ``run``)."""
    if not cfg.discord_webhook_url.strip():
        return record, None
    discord = build_notifier(cfg, "paper", policy)
    return FanOutNotifier(record, discord), discord


async def run_paper(
    base_env: dict[str, str],
    opts: PaperOptions,
    journal: Path,
    models_root: Path,
    *,
    use_ml: bool,
    out: Callable[[str], None] = lambda _line: None,
    progress: Callable[[int, int], None] | None = None,
    view: LiveView | None = None,
    alert_policy: DeliveryPolicy | None = None,
) -> PaperResult:
    from perpbot.backtest.metrics import canonical_order

    sim = start_simulator(opts)
    try:
        cfg = paper_config({**base_env, "SYMBOLS": ",".join(opts.symbols)}, sim)
        state = await asyncio.to_thread(sim.call, "GET", "/sim/state")
        start_ms = int(state["next_candle_open_ms"])
        clock = ReplayClock(int(state["replay_time_ms"]))
        fast = StreamSettings(silence_s=3600.0, backoff_s=0.05, backoff_max_s=0.5)
        ropts = RuntimeOptions(
            mode="PAPER",
            journal_path=journal,
            models_root=models_root,
            use_ml=use_ml,
            heartbeat_s=3600.0,
            tick_s=0.2,
            connect_attempts=3,
            stream=fast,
            user_stream=fast,
            driven=True,
        )
        record = RecordingNotifier()
        notifier, discord = paper_notifier(cfg, record, alert_policy)
        if discord is not None:
            out("paper: alerts are also posted to the Discord webhook, tagged [PAPER]")
        # The simulator counts request limits on paced replay time (``--replay-limits``); so does
        # this client's budget (``paper.py`` module docstring).
        budget = WeightBudget(now_ms=PacedReplayClock(clock.now_ms))
        rt = Runtime(cfg, ropts, clock=clock, notifier=notifier, out=out, view=view, budget=budget)
        await rt.start()
        preloaded = {s: rt.window.count(s) for s in (*cfg.symbols, *cfg.correlation.as_tuple())}
        try:
            driver = PaperDriver(rt, sim, clock, opts)
            t0 = time.monotonic()
            try:
                await driver.run(progress)
            finally:
                await driver.close()
            trades = canonical_order(t for b in rt.bots.values() for t in b.closed_trades)
            end = await asyncio.to_thread(sim.call, "GET", "/sim/state")
            return PaperResult(
                trades=trades,
                start_ms=start_ms,
                end_ms=int(end["end_ms"]),
                steps=driver.steps,
                reconciles=driver.reconciles,
                alerts=list(record.messages),
                final_balance=float(end["balance"]),
                bot_errors=sum(b.errors for b in rt.bots.values()),
                align_timeouts=rt.window.align_timeouts,
                state_reads=driver.state_reads,
                fallbacks=driver.fallbacks,
                weight_waits=budget.waits,
                wall_s=time.monotonic() - t0,
                preloaded=preloaded,
                alert_delivery=None if discord is None else discord.stats,
            )
        finally:
            await rt.stop()
    finally:
        sim.stop()
