"""The live runtime: ``perpbot run`` (live, demo, custom venue) over the Binance adapter.

Start-up order (issue 10 §1), each step finished before the next:
1. configuration (the caller) and the journal: format check, exclusive lock, open;
2. one ``RiskManager`` with ``restore_from_journal`` (a restart on a losing day stays blocked);
3. the adapter connects and runs its account checks (``connect_from_config``);
4. the base balance is read once and set (SPEC §13 row 15); the trading plan is printed;
5. every entry filter is loaded (a model that does not verify stops start-up, nothing sent);
6. the user-data stream is opened, so that what happens during recovery is not missed; then
   each bot: preload (REST history into the window), ``start(ctx)`` (recovery);
7. the market stream, the periodic tasks and the per-symbol workers.

A closed candle of any streamed symbol goes into the ``MarketWindow``; a traded symbol's candle
becomes one job on that symbol's ``SymbolWorker``: wait (bounded) for BTC/ETH of the same open
time, fetch OI/funding (SPEC §2.3), build the context with ``live_feature_row``, ``on_candle``.

Stop (SIGINT/SIGTERM → ``stop`` event): no new candle jobs are taken, the jobs in flight and
queued finish (at most ``drain_s``; what is still running then is cancelled, logged and alerted,
so a stuck job cannot keep the process from stopping), so does the bots' background SL/TP work
(same bound), then the rest is cancelled (``SymbolBot.stop``; protective orders stay on the
exchange, SPEC §13 row 28), the streams close, the journal is flushed and closed, the lock
released. The caller exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perpbot.aio import cancel_and_wait
from perpbot.alerts.streams import StreamWatch
from perpbot.config import AppConfig
from perpbot.engine.clock import Clock, LiveClock
from perpbot.engine.notifier import Notifier, RecordingNotifier, weight_ban_message
from perpbot.exchange.binance.market_stream import Candle
from perpbot.exchange.binance.ws import StreamSettings
from perpbot.ml.features import LIVE_WINDOW_BARS
from perpbot.runtime import gc_quiet
from perpbot.runtime.candle_job import handle_candle
from perpbot.runtime.guard import JournalLock, check_journal_format, load_entry_filter, trading_plan
from perpbot.runtime.lane import Lane
from perpbot.runtime.live_view import LiveView
from perpbot.runtime.micro_seed import seed_window
from perpbot.runtime.ops_desk import OperatorDesk
from perpbot.runtime.periodic import Every, Midnight, wind_down
from perpbot.runtime.supervisor import (
    CANCEL_WAIT_S,
    SymbolWorker,
    describe,
    settle_background,
)
from perpbot.runtime.window import ALIGN_WAIT_S, MarketWindow

log = logging.getLogger(__name__)

RECONCILE_S = 300.0
MONITOR_S = 300.0
HEARTBEAT_S = 60.0
# A graceful stop's bound on the in-flight candle jobs: an entry's longest legitimate path (close
# settling 15 s + fill wait 10 s + protection retries) fits well inside it.
DRAIN_S = 60.0


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    mode: str  # shown in the plan and alerts: live / demo / custom / paper
    journal_path: Path
    models_root: Path
    use_ml: bool = True
    reconcile_s: float = RECONCILE_S
    monitor_s: float = MONITOR_S
    heartbeat_s: float = HEARTBEAT_S
    tick_s: float = 1.0  # how often the periodic tasks look at the clock
    operator_s: float = 2.0  # how often operator requests (``perpbot flatten``) are looked for
    align_wait_s: float = ALIGN_WAIT_S
    preload: int = LIVE_WINDOW_BARS
    connect_attempts: int | None = None  # None: retry forever (a restart must not give up)
    restart_backoff_s: float = 1.0
    drain_s: float = DRAIN_S  # graceful stop: how long in-flight candle jobs may still run
    stream: StreamSettings = field(default_factory=StreamSettings)
    # An idle account's user stream carries only pings: they keep it alive (``data_only=False``).
    user_stream: StreamSettings = field(
        default_factory=lambda: StreamSettings(silence_s=600.0, data_only=False)
    )
    # Paper: a driver hands candles to the workers (``submit_candle``) and reconciles itself, in
    # the backtest's time order; the market stream then only fills the window.
    driven: bool = False


class Runtime:
    """One process: one risk manager, one bot and one worker per symbol, shared streams."""

    def __init__(
        self,
        cfg: AppConfig,
        opts: RuntimeOptions,
        *,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        out: Callable[[str], None] = print,
        connect: Callable[..., Awaitable[tuple[Any, float]]] | None = None,
        view: LiveView | None = None,
        budget: Any = None,
    ) -> None:
        self.cfg = cfg
        self.opts = opts
        self.clock = clock or LiveClock()
        self.notifier = notifier or RecordingNotifier()
        self._delivery = self.notifier  # the one that owns the webhook (drained in ``close``)
        self.view = view  # the rich live view (``live_view``); None: off
        if view is not None:
            self.notifier = view.watch_notifier(self.notifier)
        self.out = out
        self._connect = connect
        self.window = MarketWindow(cfg, size=max(opts.preload, 1), align_wait_s=opts.align_wait_s)
        self.bots: dict[str, Any] = {}
        self.workers: dict[str, SymbolWorker] = {}
        self.exchange: Any = None
        self.feed: Any = None
        self.user_stream: Any = None
        self.risk: Any = None
        self.budget: Any = budget  # None: the process's shared weight budget
        self.journal: Any = None
        self._lock: JournalLock | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.prev_oi: dict[str, float] = {}  # SPEC §2.3's stored OI per symbol (``candle_job``)
        self.micro_decides: dict[str, bool] = {}  # symbol → its decision reads OI/funding (ML)
        self._frozen = False  # start-up's objects frozen (``gc_quiet``) until ``close``
        self.lane = Lane()  # the candle jobs' CPU, most urgent first (``lane.py``)
        self._stopping = False
        self.started = asyncio.Event()
        self.candles_handled: dict[str, int] = {s: 0 for s in cfg.symbols}
        self.signals: dict[str, int] = {s: 0 for s in cfg.symbols}
        self.last_candle_wall: dict[str, float] = {}
        self.periodic: dict[str, Every] = {}
        self.midnight: Midnight | None = None
        self.desk: OperatorDesk | None = None  # operator requests from other processes (``ops_desk``)
        self.streams = StreamWatch(self.alert_nowait)
        self._alert_tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ alerts

    async def alert(self, kind: str, text: str) -> None:
        await self.notifier.notify(kind, text)

    def alert_nowait(self, kind: str, text: str) -> None:
        """The synchronous path (risk manager, weight budget, stream watch): never blocks. Shown
        in the live view like the bots' alerts, then handed to the delivering notifier."""
        if self.view is not None:
            self.view.snapshot.on_alert(kind, text)
        nowait = getattr(self._delivery, "notify_nowait", None)
        if nowait is not None:
            nowait(kind, text)
            return
        task = asyncio.get_running_loop().create_task(self._delivery.notify(kind, text))
        self._alert_tasks.add(task)
        task.add_done_callback(self._alert_tasks.discard)

    def _weight_alert(self, text: str) -> None:
        self.alert_nowait("weight_ban", weight_ban_message(text))

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        from perpbot.engine.bot import SymbolBot
        from perpbot.engine.journal import Journal
        from perpbot.engine.risk import RiskManager
        from perpbot.exchange.binance.startup import connect_from_config
        from perpbot.ml.decision import PassThroughFilter

        cfg, opts = self.cfg, self.opts
        # 1. journal
        check_journal_format(opts.journal_path)
        self._lock = JournalLock(opts.journal_path).acquire()
        try:
            filters = {
                s: load_entry_filter(opts.models_root, s, cfg, use_ml=opts.use_ml) for s in cfg.symbols
            }
            # An ML filter (with a model now or hot-reloaded later) reads the OI/funding features:
            # then they are decision inputs and the candle job waits for them (``candle_job``).
            self.micro_decides = {s: not isinstance(f, PassThroughFilter) for s, f in filters.items()}
            if self.view is not None:
                filters = {s: self.view.watch_filter(s, f) for s, f in filters.items()}
            self.journal = Journal(opts.journal_path)
            check_journal_format(opts.journal_path)  # stamps a new journal with our format
            # 2. risk manager
            self.risk = RiskManager(cfg, self.clock, journal=self.journal, on_alert=self.alert_nowait)
            self.risk.restore_from_journal(self.journal)
            # 3. adapter
            connect = self._connect or connect_from_config
            from perpbot.exchange.binance.budget import shared_budget

            self.budget = self.budget or shared_budget()
            self.budget.alert = self._weight_alert  # 429 / 418 (-1003): once per window or ban
            self.exchange, balance = await connect(
                cfg, attempts=opts.connect_attempts, report=self.out, budget=self.budget
            )
            # 4. base balance once, then the plan before any order
            self.risk.set_base_balance(balance)
            for line in trading_plan(cfg, balance, opts.mode, use_ml=opts.use_ml):
                self.out(line)
            # 6. user stream, then the bots
            self.user_stream = await self.exchange.start_user_stream(
                [*cfg.symbols], settings=opts.user_stream
            )
            self.user_stream.resync_listeners.append(self._reconcile_all)
            streamed = list(dict.fromkeys([*cfg.symbols, *cfg.correlation.as_tuple()]))
            self.feed = self.exchange.kline_feed(
                streamed, self._on_candle, settings=opts.stream, preload=opts.preload
            )
            if opts.driven:
                # A replay's candles are closed by replay time, not by the venue's wall clock
                # (a market dated after today would otherwise lose its whole preload history).
                self.feed.server_ms = self.clock.now_ms
            history = await self.feed.preload()
            for sym, candles in history.items():
                self.window.preload(sym, candles)
            # SPEC §2.3's start-up seeding over the whole window, for feature parity (micro_seed)
            await seed_window(self.exchange, self.window, cfg.symbols, self.prev_oi)
            for sym in cfg.symbols:
                bot = SymbolBot(
                    sym,
                    cfg,
                    self.exchange,
                    self.risk,
                    filters[sym],
                    self.journal,
                    self.clock,
                    self.notifier,
                    num_symbols=len(cfg.symbols),
                )
                self.bots[sym] = bot
                await bot.start(self.window.context(sym))
                await bot.prepare_venue()
            # What start-up left alive (modules, ccxt's markets, the preloaded windows) is never
            # traversed by a collection again; before the streams, so no frame waits for it.
            gc_quiet.freeze_startup()
            self._frozen = True
            # 7. workers, market stream, periodic work
            for sym in cfg.symbols:
                w = SymbolWorker(sym, self.alert, backoff_s=opts.restart_backoff_s)
                w.start()
                self.workers[sym] = w
            self.feed.start()
            self.streams.add("market", self.feed.socket)
            self.streams.add("user", self.user_stream.socket)
            self._spawn_periodic()
            if self.view is not None:
                self._tasks.append(asyncio.get_running_loop().create_task(self.view.run(self), name="view"))
        except BaseException:
            try:  # what earlier bots' recovery set going finishes first (bounded, as in ``stop``)
                await self._alert_unsettled("start-up failed", await self._settle_protection())
            finally:
                await self.close()
            raise
        self.started.set()

    def _spawn_periodic(self) -> None:
        opts = self.opts
        self.periodic = {
            "monitor": Every("monitor", opts.monitor_s, self._monitor),
            "heartbeat": Every("heartbeat", opts.heartbeat_s, self._heartbeat),
        }
        if not opts.driven:
            self.periodic["reconcile"] = Every("reconcile", opts.reconcile_s, self._reconcile_all)
        self.desk = OperatorDesk(self, opts.journal_path)
        self.periodic["operator"] = Every("operator", opts.operator_s, self.desk.poll)
        self.midnight = Midnight(self.risk.maybe_reset)
        loop = asyncio.get_running_loop()
        now = self.clock.now_ms
        for name, job in self.periodic.items():
            self._tasks.append(loop.create_task(job.run(now, opts.tick_s), name=f"periodic-{name}"))
        self._tasks.append(loop.create_task(self.midnight.run(now, opts.tick_s), name="midnight"))
        self._tasks.append(loop.create_task(self.streams.run(opts.tick_s), name="stream-watch"))

    # ------------------------------------------------------------------ candles

    async def _on_candle(self, c: Candle) -> None:
        """Market-stream callback: store, then hand a traded symbol's candle to its worker. It
        never waits on a bot, so one slow symbol cannot hold the stream."""
        await self.window.add(c)
        if self.opts.driven:
            return
        self.submit_candle(c.symbol, c.open_ms)

    def submit_candle(self, sym: str, open_ms: int) -> None:
        """Hand ``sym``'s closed candle ``open_ms`` (already in the window) to its worker."""
        worker = self.workers.get(sym)
        if worker is None or self._stopping:
            return
        worker.submit(lambda: self._handle(sym, open_ms))

    async def _handle(self, sym: str, open_ms: int) -> None:
        await handle_candle(self, sym, open_ms)  # ``candle_job``: the decision path, in order

    # ------------------------------------------------------------------ periodic jobs

    async def reconcile_all(self) -> None:
        await self._reconcile_all()

    async def _reconcile_all(self) -> None:
        for sym, bot in self.bots.items():
            try:
                await bot.reconcile()
            except Exception:
                log.exception("%s: reconcile failed", sym)

    async def _monitor(self) -> None:
        """SPEC §8.7: per open position, the streamed price and the estimated PnL."""
        latest = self.feed.latest if self.feed is not None else {}
        for sym, bot in self.bots.items():
            st = bot.state
            price = latest.get(sym, (0.0, 0))[0]
            pnl = bot.estimated_pnl(price) if price else None
            if st.side is None or pnl is None or not st.entry_price or not st.qty:
                continue
            pct = pnl / (st.entry_price * st.qty) * 100.0
            log.info(
                "monitor %s %s price %.6g est. PnL %.4f USDT (%.2f %%)", sym, st.side.value, price, pnl, pct
            )

    async def _heartbeat(self) -> None:
        self.out(self.heartbeat_line())

    def heartbeat_line(self) -> str:
        now = time.monotonic()
        pos = [f"{s}:{b.state.side.value}" for s, b in self.bots.items() if b.state.side is not None]
        ages = [f"{s} {now - t:.0f}s" for s, t in self.last_candle_wall.items()]
        streams = []
        if self.feed is not None:
            streams.append(f"market {'up' if self.feed.socket.connected.is_set() else 'DOWN'}")
        if self.user_stream is not None:
            streams.append(f"user {'up' if self.user_stream.socket.connected.is_set() else 'DOWN'}")
        weight = self.budget.used if self.budget is not None else None
        workers = describe(self.workers)
        restarts = sum(w["restarts"] for w in workers.values())
        return (
            f"heartbeat {self.opts.mode}: symbols {len(self.bots)}, positions [{', '.join(pos) or 'none'}], "
            f"last candle age [{', '.join(ages) or 'none yet'}], streams [{', '.join(streams)}], "
            f"weight used {weight if weight is not None else '?'}, bot restarts {restarts}"
        )

    # ------------------------------------------------------------------ stop

    async def stop(self) -> None:
        """Graceful stop: no new entries, in-flight work finishes, protection stays."""
        if self._stopping:
            return
        self._stopping = True
        if self.risk is not None:
            self.risk.halt_entries()  # the decisions still running send no entry
        if self.feed is not None:
            await self.feed.stop()
        workers = list(self.workers.values())
        abandoned = await asyncio.gather(*(w.stop(drain=True, drain_s=self.opts.drain_s) for w in workers))
        cut = ", ".join(f"{w.symbol} ({n})" for w, n in zip(workers, abandoned, strict=True) if n)
        unsettled = await self._settle_protection()
        if cut:
            with contextlib.suppress(Exception):
                await self.alert(
                    "alert",
                    f"stop: candle job(s) still running after {self.opts.drain_s:g} s were cancelled: "
                    f"{cut}; protective orders stay on the exchange, the next start verifies them",
                )
        await self._alert_unsettled("stop", unsettled)
        await self.close()

    async def _settle_protection(self) -> str:
        """Before ``close`` cancels it (``SymbolBot.stop``), in-flight protection work finishes,
        at most ``drain_s`` each: a reconcile pass (it may be re-placing a lost SL) and the bots'
        background work (a lost SL/TP re-placed, a late entry fill adopted and protected), with
        the user stream still open. Cancelling it left positions without their stop-loss after
        a graceful stop, or after a start-up that failed once earlier bots had recovered. The
        names of what was still running at the bound."""
        unsettled = await wind_down(self.periodic.values(), self.opts.drain_s)
        return ", ".join([*unsettled, *await settle_background(self.bots, self.opts.drain_s)])

    async def _alert_unsettled(self, when: str, what: str) -> None:
        if what:
            with contextlib.suppress(Exception):
                await self.alert(
                    "alert",
                    f"{when}: SL/TP placement still running after {self.opts.drain_s:g} s was "
                    f"cancelled: {what}; CHECK their protection (the next start verifies it)",
                )

    async def close(self) -> None:
        # Bounded, and cancelled again if 3.11 loses the cancellation (``perpbot.aio``).
        await asyncio.gather(*(cancel_and_wait(t, CANCEL_WAIT_S) for t in self._tasks))
        self._tasks.clear()
        for bot in self.bots.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bot.stop(), CANCEL_WAIT_S)
        if self.feed is not None:
            with contextlib.suppress(Exception):
                await self.feed.stop()
        if self.exchange is not None:
            with contextlib.suppress(Exception):
                await self.exchange.close()
            self.exchange = None
        if self.desk is not None:
            self.desk.close()
        if self.journal is not None:
            self.journal.close()  # flushes the writer thread first
            self.journal = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self.budget is not None and self.budget.alert == self._weight_alert:
            self.budget.alert = None  # the process-wide budget outlives this runtime
        aclose = getattr(self._delivery, "aclose", None)
        if aclose is not None:  # last: alerts raised while stopping still go out (bounded wait)
            with contextlib.suppress(Exception):
                await aclose()
        if self._frozen:
            self._frozen = False
            gc_quiet.unfreeze()


async def run_until_stopped(runtime: Runtime, stop: asyncio.Event) -> int:
    """Start, serve until ``stop`` is set, stop gracefully; the exit status (0). A stop while
    start-up still waits for the venue (retried forever; no bot started, nothing sent) ends
    start-up there; once a bot recovers its position, start-up finishes first."""
    starting = asyncio.ensure_future(runtime.start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done() and not runtime.bots:
            starting.cancel()  # once: ``start`` closes what it opened
            await asyncio.wait({starting})
            if starting.cancelled():
                return 0
        await starting  # (a cancellation lost in a ``wait_for`` on 3.11: stopped below)
        await stopped
    finally:
        stopped.cancel()
        if not starting.done():  # this task was cancelled itself: so is start-up, as before
            starting.cancel()
            await asyncio.wait({starting})
        elif not starting.cancelled() and starting.exception() is None:
            await runtime.stop()
    return 0
