"""Operator notifications (SPEC §11): a protocol, a recorder for backtests/tests, a Discord webhook.

Why fire-and-forget: the design point posted synchronously from the event loop, so a slow webhook
stalled candle handling and order events. ``DiscordNotifier.notify`` only schedules a task and
returns; the task has a 10 s timeout and its errors are logged by a done-callback, never raised
into the bot. The webhook URL contains a token: it is never logged and never put in a message.

Message builders are plain functions so that every mode (and the tests) produce identical text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from perpbot.domain.types import CloseReason, Side

log = logging.getLogger(__name__)

DISCORD_MAX_CHARS = 2000


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

    def texts(self, kind: str | None = None) -> list[str]:
        return [t for k, t in self.messages if kind is None or k == kind]

    def kinds(self) -> list[str]:
        return [k for k, _ in self.messages]


class NullNotifier:
    """Discards everything (large backtests that do not want messages in memory)."""

    async def notify(self, kind: str, text: str) -> None:
        return None


class DiscordNotifier:
    """POSTs ``{"content": text}`` to a Discord webhook without blocking the event loop.

    ``session_factory`` builds the HTTP session lazily inside the running loop (default: an
    ``aiohttp.ClientSession``); tests inject a fake. An empty URL disables sending (SPEC §11).
    Call ``aclose()`` on shutdown to let in-flight messages finish and close the session.
    """

    def __init__(
        self,
        url: str,
        session_factory: Callable[[], Any] | None = None,
        *,
        testnet: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        self._url = url.strip()
        self._factory = session_factory
        self._prefix = "[TESTNET] " if testnet else ""
        self._timeout_s = timeout_s
        self._session: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return bool(self._url)

    def __repr__(self) -> str:  # never show the URL (it embeds the webhook token)
        return f"DiscordNotifier(enabled={self.enabled}, testnet={bool(self._prefix)})"

    async def notify(self, kind: str, text: str) -> None:
        if not self._url:
            return
        content = (self._prefix + text)[:DISCORD_MAX_CHARS]
        task = asyncio.get_running_loop().create_task(self._post(kind, content))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # _post catches everything; this is the last line of defence
            self.failed += 1
            log.error("discord notifier task failed: %s", type(exc).__name__)

    def _scrub(self, text: str) -> str:
        return text.replace(self._url, "<webhook>") if self._url else text

    async def _get_session(self) -> Any:
        if self._session is None:
            if self._factory is not None:
                self._session = self._factory()
            else:
                import aiohttp

                self._session = aiohttp.ClientSession()
        return self._session

    async def _post(self, kind: str, content: str) -> None:
        try:
            import aiohttp

            session = await self._get_session()
            timeout = aiohttp.ClientTimeout(total=self._timeout_s)
            async with session.post(self._url, json={"content": content}, timeout=timeout) as resp:
                if resp.status >= 400:
                    self.failed += 1
                    log.warning("discord webhook answered HTTP %s for a %s message", resp.status, kind)
                    return
            self.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed += 1
            log.warning(
                "discord webhook failed for a %s message: %s: %s",
                kind,
                type(exc).__name__,
                self._scrub(str(exc)),
            )

    async def aclose(self) -> None:
        """Wait for in-flight messages (each bounded by the timeout), then close the session."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._session is not None:
            try:
                await self._session.close()
            finally:
                self._session = None


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
