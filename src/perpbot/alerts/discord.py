"""Discord webhook delivery that never blocks the event loop (SPEC §11, issue 10 §3).

Why a bounded queue and one worker task: the design point posted synchronously from the loop, so
a slow webhook stalled candle handling and order events; one task per message (the next step)
had no bound on memory when Discord was down and no order between messages. Here:

- ``notify`` / ``notify_nowait`` only format, redact and append to a bounded deque, then return.
  When the deque is full the new message is dropped (a critical one — emergency, kill switch —
  evicts the oldest non-critical message instead) and counted; the next delivered message
  carries one line saying how many were dropped, and a warning is logged. Memory stays bounded.
- One worker task posts the messages in order. Network errors, timeouts and HTTP 5xx are
  retried with exponential back-off; HTTP 429 waits what Discord says (the JSON body's
  ``retry_after`` in seconds and/or the ``Retry-After`` header, the larger) before the next
  post; an exhausted bucket (``X-RateLimit-Remaining: 0``) waits its ``X-RateLimit-Reset-After``
  before the next post. Any other 4xx is permanent (a bad webhook): logged, counted, not retried.
- ``aclose`` drains the queue for at most ``drain_s``, then gives up on what is left (counted and
  logged) and closes the HTTP session.

Every message is redacted (webhook URL and token, API key and secret) before it is queued and
every log line of this module goes through the same redactor. Messages are cut to Discord's
2000-character limit (counted in UTF-16 units, the stricter count) with a visible marker.
Mentions are disabled in every post (``allowed_mentions``), so an exception text containing
``@everyone`` cannot ping a channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from perpbot.aio import STOP_WAIT_S, cancel_and_wait
from perpbot.alerts.redact import Redactor, webhook_secrets

log = logging.getLogger(__name__)

DISCORD_MAX_CHARS = 2000
TRUNCATED = "… (truncated)"
CRITICAL_KINDS = frozenset({"emergency", "kill_switch"})


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    queue_size: int = 200
    timeout_s: float = 10.0  # one POST (SPEC §11)
    max_attempts: int = 6  # per message, 429 answers included
    backoff_s: float = 1.0  # network error / 5xx: 1, 2, 4, … s
    backoff_max_s: float = 60.0
    max_retry_after_s: float = 900.0  # a longer 429 window: the message is given up (counted)
    drain_s: float = 5.0  # shutdown: how long the queue may still take


@dataclass(slots=True)
class DeliveryStats:
    queued: int = 0
    sent: int = 0
    failed: int = 0  # given up after retries or refused (4xx)
    dropped: int = 0  # queue full, or posted after close
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    undelivered_at_close: int = 0
    dropped_kinds: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Message:
    kind: str
    content: str


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def fit(text: str, limit: int = DISCORD_MAX_CHARS) -> str:
    """``text`` cut to ``limit`` UTF-16 units, with a marker when it was cut."""
    if utf16_len(text) <= limit:
        return text
    room = limit - utf16_len(TRUNCATED)
    cut = text[:room]
    while utf16_len(cut) > room:  # astral characters count twice
        cut = cut[:-1]
    return cut + TRUNCATED


def retry_after_s(headers: Any, body: bytes) -> float | None:
    """Seconds Discord asks us to wait on a 429: body ``retry_after`` and ``Retry-After``, the
    larger of those present; ``X-RateLimit-Reset-After`` when neither is."""
    values: list[float] = []
    try:
        data = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if isinstance(data, dict):
        v = _num(data.get("retry_after"))
        if v is not None:
            values.append(v)
    v = _num(headers.get("Retry-After"))
    if v is not None:
        values.append(v)
    if not values:
        v = _num(headers.get("X-RateLimit-Reset-After"))
        if v is not None:
            values.append(v)
    return max(values) if values else None


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x >= 0 and x == x else None


class DiscordNotifier:
    """Posts alerts to one Discord webhook from a bounded queue (see the module docstring).

    ``tag`` (``[DEMO]``, ``[PAPER]``, ``[TESTNET]``; live: empty) prefixes every message.
    ``secrets`` (API key and secret) are masked wherever they appear, like the webhook itself.
    An empty ``url`` disables posting (SPEC §11); alerts are still logged.
    """

    def __init__(
        self,
        url: str,
        *,
        tag: str = "",
        secrets: Iterable[str] = (),
        policy: DeliveryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url.strip()
        self._prefix = f"{tag} " if tag else ""
        self._redact = Redactor([*webhook_secrets(self._url), *secrets])
        self.policy = policy or DeliveryPolicy()
        self._sleep = sleep
        self._now = monotonic
        self._queue: deque[_Message] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = False
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.get_ident()
        self._session: aiohttp.ClientSession | None = None
        self._not_before = 0.0  # monotonic time before which nothing is posted (429, empty bucket)
        self._unreported: Counter[str] = Counter()  # drops not yet announced in a message
        self._closed = False
        self.stats = DeliveryStats()

    @property
    def enabled(self) -> bool:
        return bool(self._url)

    @property
    def pending(self) -> int:
        """Messages queued or in flight."""
        return len(self._queue) + (1 if self._busy else 0)

    def __repr__(self) -> str:  # never the URL: it embeds the webhook token
        return f"DiscordNotifier(enabled={self.enabled}, tag={self._prefix.strip()!r})"

    # ------------------------------------------------------------------ producers

    async def notify(self, kind: str, text: str) -> None:
        """The ``Notifier`` protocol: queue and return at once (never waits on the network)."""
        self.notify_nowait(kind, text)

    def notify_nowait(self, kind: str, text: str) -> bool:
        """Queue one alert from synchronous code; False when it was dropped. Safe from another
        thread (handed to the loop's thread)."""
        content = fit(self._redact(self._prefix + text))
        if self._closed:
            self._count_drop(kind)
            log.warning("alert after shutdown not sent (%s): %s", kind, content)
            return False
        log.info("alert %s: %s", kind, content)
        if not self._url:
            return True
        msg = _Message(kind, content)
        if self._loop is not None and threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self._enqueue, msg)
            return True
        return self._enqueue(msg)

    def _enqueue(self, msg: _Message) -> bool:
        if len(self._queue) >= self.policy.queue_size:
            victim = None
            if msg.kind in CRITICAL_KINDS:
                victim = next((m for m in self._queue if m.kind not in CRITICAL_KINDS), None)
            if victim is None:
                self._count_drop(msg.kind)
                return False
            self._queue.remove(victim)
            self._count_drop(victim.kind)
        self._queue.append(msg)
        self.stats.queued += 1
        self._idle.clear()
        self._wake.set()
        self._ensure_worker()
        return True

    def _count_drop(self, kind: str) -> None:
        if not self._unreported:
            log.warning(
                "discord alert queue full (%d): dropping alerts until it drains; the next alert "
                "sent says how many",
                self.policy.queue_size,
            )
        self.stats.dropped += 1
        self.stats.dropped_kinds[kind] += 1
        self._unreported[kind] += 1

    def _ensure_worker(self) -> None:
        if self._worker is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop yet: the first call from inside one starts the worker
            return
        self._loop = loop
        self._thread = threading.get_ident()
        self._worker = loop.create_task(self._run(), name="discord-notifier")

    # ------------------------------------------------------------------ the worker

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._busy = False
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            msg = self._queue.popleft()
            self._busy = True
            try:
                await self._deliver(self._with_drop_notice(msg))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # last line of defence: the worker must survive
                self.stats.failed += 1
                log.error("discord notifier: %s alert lost: %s", msg.kind, self._one_line(exc))

    def _with_drop_notice(self, msg: _Message) -> _Message:
        if not self._unreported:
            return msg
        n = sum(self._unreported.values())
        kinds = ", ".join(f"{k} {c}" for k, c in sorted(self._unreported.items()))
        self._unreported.clear()
        log.warning("discord notifier: %d alerts were dropped while the queue was full (%s)", n, kinds)
        notice = f"⚠️ {n} earlier alert(s) dropped: the alert queue was full ({kinds})\n"
        return _Message(msg.kind, fit(notice + msg.content))

    async def _deliver(self, msg: _Message) -> None:
        p = self.policy
        why = ""
        for attempt in range(1, p.max_attempts + 1):
            wait_s = self._not_before - self._now()
            if wait_s > 0:
                await self._sleep(wait_s)
            try:
                status, headers, body = await self._post(msg.content)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why, delay = self._one_line(exc), self._backoff(attempt)
            else:
                self._note_bucket(headers)
                if 200 <= status < 300:
                    self.stats.sent += 1
                    return
                if status == 429:
                    self.stats.rate_limited += 1
                    ra = retry_after_s(headers, body)
                    delay = self._backoff(attempt) if ra is None else ra
                    if delay > p.max_retry_after_s:
                        self.stats.failed += 1
                        log.error(
                            "discord webhook: rate limited for %.0f s (over %.0f s); %s alert given up",
                            delay,
                            p.max_retry_after_s,
                            msg.kind,
                        )
                        return
                    self._not_before = max(self._not_before, self._now() + delay)
                    why, delay = f"HTTP 429, retry after {delay:.3g} s", 0.0
                elif status >= 500:
                    why, delay = f"HTTP {status}", self._backoff(attempt)
                else:
                    self.stats.failed += 1
                    log.error(
                        "discord webhook refused a %s alert: HTTP %d %s (not retried)",
                        msg.kind,
                        status,
                        self._redact(body[:200].decode("utf-8", "replace")),
                    )
                    return
            if attempt == p.max_attempts:
                break
            self.stats.retries += 1
            log.warning(
                "discord webhook: %s for a %s alert; attempt %d of %d, next in %.1f s",
                why,
                msg.kind,
                attempt,
                p.max_attempts,
                max(delay, self._not_before - self._now()),
            )
            if delay > 0:
                await self._sleep(delay)
        self.stats.failed += 1
        log.error("discord webhook: %s alert given up after %d attempts (%s)", msg.kind, p.max_attempts, why)

    async def _post(self, content: str) -> tuple[int, Any, bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        payload = {"content": content, "allowed_mentions": {"parse": []}}
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_s)
        async with self._session.post(self._url, json=payload, timeout=timeout) as resp:
            body = await resp.read()
            return resp.status, resp.headers, body

    def _note_bucket(self, headers: Any) -> None:
        """An exhausted bucket: wait its reset before the next post instead of earning a 429."""
        if str(headers.get("X-RateLimit-Remaining", "")).strip() == "0":
            reset = _num(headers.get("X-RateLimit-Reset-After"))
            if reset is not None:
                self._not_before = max(self._not_before, self._now() + reset)

    def _backoff(self, attempt: int) -> float:
        return min(self.policy.backoff_s * 2 ** (attempt - 1), self.policy.backoff_max_s)

    def _one_line(self, exc: BaseException) -> str:
        return self._redact(" ".join(f"{type(exc).__name__}: {exc}".split()))

    # ------------------------------------------------------------------ shutdown

    async def aclose(self, drain_s: float | None = None) -> None:
        """Refuse new alerts, let the queue drain for at most ``drain_s`` (default: the policy's),
        count and log what is left, close the HTTP session."""
        self._closed = True
        limit = self.policy.drain_s if drain_s is None else drain_s
        if self._worker is not None and self.pending:
            try:
                await asyncio.wait_for(self._idle.wait(), limit)
            except TimeoutError:
                left = self.pending
                self.stats.undelivered_at_close += left
                log.warning(
                    "discord notifier: %d alert(s) not delivered at shutdown (drain limit %.1f s)",
                    left,
                    limit,
                )
        if self._worker is not None:
            await cancel_and_wait(self._worker, STOP_WAIT_S)
            self._worker = None
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None
