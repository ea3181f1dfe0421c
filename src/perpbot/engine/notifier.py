"""Operator notifications (SPEC §11): the protocol, a recorder for backtests/tests, and the
message builders.

The Discord delivery (bounded queue, one worker, retries, 429 handling, redaction) lives in
``perpbot.alerts.discord``; ``perpbot.alerts.factory.build_notifier`` picks it for a run.
Message builders are plain functions so that every mode (and the tests) produce identical text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from perpbot.domain.types import CloseReason, Side

log = logging.getLogger(__name__)


class Notifier(Protocol):
    async def notify(self, kind: str, text: str) -> None:
        """Deliver ``text``; ``kind`` is entry / close / info / kill_switch / emergency / alert."""
        ...


@dataclass(slots=True)
class RecordingNotifier:
    """Keeps every message in memory (backtests, tests, dry runs)."""

    messages: list[tuple[str, str]] = field(default_factory=list)

    async def notify(self, kind: str, text: str) -> None:
        self.messages.append((kind, text))

    def notify_nowait(self, kind: str, text: str) -> bool:
        """The synchronous path (risk manager, weight budget callbacks)."""
        self.messages.append((kind, text))
        return True

    def texts(self, kind: str | None = None) -> list[str]:
        return [t for k, t in self.messages if kind is None or k == kind]

    def kinds(self) -> list[str]:
        return [k for k, _ in self.messages]


class NullNotifier:
    """Discards everything (large backtests that do not want messages in memory)."""

    async def notify(self, kind: str, text: str) -> None:
        return None

    def notify_nowait(self, kind: str, text: str) -> bool:
        return True


# ==================================================================== message builders
def _code(value: str) -> str:
    return f"`{value}`"


def entry_message(
    symbol: str,
    side: Side,
    *,
    entry_price: float,
    qty: float,
    leverage: int,
    sl: float,
    tp: float,
    rsi: float,
    macd_hist: float,
    atr: float,
) -> str:
    """SPEC §11 entry: header, entry (4 dp), qty, leverage, SL/TP (4 dp), RSI/MACD/ATR snapshot."""

    def nz(x: float) -> float:  # NaN → 0 (SPEC §8.4 step 7)
        return 0.0 if x != x else x

    return (
        f"**[{symbol}] {side.value} entry**\n"
        f"Entry: {_code(f'{entry_price:.4f}')}  Qty: {_code(f'{qty:g}')}  Leverage: {_code(f'{leverage}x')}\n"
        f"SL: {_code(f'{sl:.4f}')}  TP: {_code(f'{tp:.4f}')}\n"
        f"RSI: {_code(f'{nz(rsi):.2f}')}  MACD hist: {_code(f'{nz(macd_hist):.6f}')}  "
        f"ATR: {_code(f'{nz(atr):.6f}')}"
    )


_CLOSE_EMOJI = {CloseReason.TP: "✅", CloseReason.SL: "❌"}


def close_message(
    symbol: str, side: Side, reason: CloseReason, *, exit_price: float, estimated: float, actual: float
) -> str:
    """SPEC §11 close: emoji by reason, exit (4 dp), estimated vs actual net PnL and difference."""
    emoji = _CLOSE_EMOJI.get(reason, "🔶")
    return (
        f"{emoji} **[{symbol}] {side.value} {reason.value} close**\n"
        f"Exit: {_code(f'{exit_price:.4f}')}\n"
        f"Estimated PnL: {_code(f'{estimated:+.4f} USDT')}  Actual net PnL: {_code(f'{actual:+.4f} USDT')}\n"
        f"Difference (slippage + fees + funding): {_code(f'{actual - estimated:+.4f} USDT')}"
    )


def info_message(text: str) -> str:
    return f"ℹ️ {text}"


def recovered_message(symbol: str, side: Side, entry_price: float, qty: float, replaced: list[str]) -> str:
    """SPEC §11 info: restart with a recovered position."""
    extra = f"; re-placed {', '.join(replaced)}" if replaced else ""
    return info_message(
        f"**[{symbol}]** restarted with an open {side.value} position: entry {_code(f'{entry_price:.4f}')}, "
        f"qty {_code(f'{qty:g}')}{extra}"
    )


def kill_switch_message(symbol: str, reason: str) -> str:
    return (
        f"🛑 **[{symbol}] kill switch tripped**: {reason}. New entries are blocked; open positions keep "
        f"their SL/TP. Set `RESET_KILL_SWITCH_{symbol}=true` and restart to clear it."
    )


def emergency_message(symbol: str, side: Side, detail: str, *, success: bool) -> str:
    if success:
        return f"🚨 **[{symbol}] {side.value} emergency close sent**: {detail}"
    return f"🚨 **[{symbol}] {side.value} MANUAL ACTION NEEDED**: {detail}"


def alert_message(symbol: str, text: str) -> str:
    return f"⚠️ **[{symbol}]** {text}"


def daily_loss_message(daily_pnl: float, base_balance: float, limit: float) -> str:
    """The daily-loss block (SPEC §9): sent once per UTC day, when the gate first closes."""
    pct = -daily_pnl / base_balance * 100.0 if base_balance > 0 else 0.0
    return (
        f"🛑 **Daily loss limit reached**: today's net PnL {_code(f'{daily_pnl:+.4f} USDT')} "
        f"({_code(f'-{pct:.2f} %')} of the base balance, limit {_code(f'{limit * 100:.0f} %')}). "
        "No new entries until 00:00 UTC; open positions keep their SL/TP."
    )


def weight_ban_message(text: str) -> str:
    """Binance request-weight back-off or IP ban (HTTP 429 / 418, code -1003)."""
    return f"⛔ **[BINANCE] request weight**: {text}"


def stream_outage_message(stream: str, down_s: float, watchdog_s: float, detail: str) -> str:
    why = f" Last error: {detail}." if detail else ""
    return (
        f"📡 **{stream} stream down** for {_code(f'{down_s:.0f} s')} (watchdog {watchdog_s:.0f} s); "
        f"reconnecting with back-off.{why}"
    )


def stream_restored_message(stream: str, down_s: float) -> str:
    return info_message(
        f"**{stream} stream restored** after {_code(f'{down_s:.0f} s')}; what was missed is fetched again"
    )


def bot_restart_message(symbol: str, error: str, delay_s: float) -> str:
    """The supervisor restarts a symbol's worker task that died."""
    return alert_message(symbol, f"bot task died ({error}); restarting in {delay_s:.1f} s")
