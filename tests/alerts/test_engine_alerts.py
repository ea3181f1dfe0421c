"""Alerts raised by the engine on the in-process simulated exchange: each event is said once,
not once per candle while it lasts (the daily-loss block, the kill switch, a SYNC close)."""

from __future__ import annotations

from functools import partial

from perpbot.config import AppConfig
from perpbot.domain.types import CloseReason, Income
from perpbot.engine.clock import SimClock
from perpbot.engine.notifier import RecordingNotifier
from perpbot.engine.risk import DAY_MS, RiskManager
from tests.engine.factories import BAR, SL_BAR, SYM, T0, flat
from tests.engine.harness import LONG, World, fake_bot, protected_long_port
from tests.engine.test_bot import journal_with_losers


def _world(bars: list[tuple[float, float, float, float]], **kw: object) -> World:
    n = RecordingNotifier()
    return World(bars, notifier=n, risk_cls=partial(RiskManager, on_alert=n.notify_nowait), **kw)  # type: ignore[arg-type]


async def test_the_daily_loss_block_is_alerted_once_while_it_lasts() -> None:
    w = _world([*flat(100, 1), SL_BAR, *flat(97, 12)])
    await w.start()
    await w.run({0: LONG, **{i: LONG for i in range(2, 13)}})  # a signal on every later candle
    (trade,) = w.bot.closed_trades
    assert trade.reason is CloseReason.SL and trade.net_pnl < -0.05 * 1000.0
    assert w.notifier.kinds().count("daily_loss") == 1
    (text,) = w.notifier.texts("daily_loss")
    assert text.startswith("🛑 **Daily loss limit reached**") and f"`{w.risk.daily_pnl:+.4f} USDT`" in text
    assert [o.kind for o in w.journal.orders(SYM)] == ["ENTRY", "SL", "TP"]  # no entry after it


async def test_the_daily_loss_block_is_alerted_again_on_a_new_day_only() -> None:
    clock = SimClock(T0)
    alerts = RecordingNotifier()
    risk = RiskManager(AppConfig(symbols=(SYM,)), clock, on_alert=alerts.notify_nowait)
    risk.set_base_balance(1000.0)
    await risk.close(SYM, -60.0)
    for _ in range(5):
        assert not await risk.can_enter(SYM, LONG)
        assert not await risk.trading_allowed()
    assert alerts.kinds() == ["daily_loss"]
    clock.set(T0 + DAY_MS + 1)  # midnight: the block lifts
    assert await risk.can_enter(SYM, LONG)
    await risk.close(SYM, -70.0)
    assert not await risk.can_enter(SYM, LONG)
    assert alerts.kinds() == ["daily_loss", "daily_loss"]


async def test_a_kill_switch_trip_is_alerted_once_while_entries_stay_blocked() -> None:
    """Seven losers in the journal; the eighth, live, trips the switch. Later signals are refused
    without another alert (the daily-loss block of the same loss is its own single alert)."""
    bars = [*flat(100, 1), SL_BAR, *flat(97, 10)]
    w = _world(bars, journal=journal_with_losers(7), base=1_000_000.0)
    await w.start()
    await w.run({0: LONG, **{i: LONG for i in range(2, 11)}})
    assert w.bot.kill_switch.tripped
    kinds = w.notifier.kinds()
    assert kinds.count("kill_switch") == 1 and kinds.count("entry") == 1 and kinds.count("close") == 1


async def test_a_sync_close_is_alerted_once() -> None:
    clock = SimClock(T0 + 10 * BAR)
    entry_t = clock.now_ms()
    port = protected_long_port()
    bot, _risk, _journal, notifier = fake_bot(port, clock)
    await bot.start()
    clock.set(entry_t + 4 * BAR)
    port.pos = None  # closed on the exchange while the stream was dead
    port.incomes = [
        Income(SYM, "REALIZED_PNL", -200.0, entry_t + 3 * BAR, "3"),
        Income(SYM, "COMMISSION", -2.4, entry_t + 3 * BAR, "3"),
    ]
    for _ in range(3):
        await bot.reconcile()
    (text,) = notifier.texts("close")
    assert text.startswith("🔶 **[XRPUSDT] LONG SYNC close**")
    assert "`-202.4000 USDT`" in text
