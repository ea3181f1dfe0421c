"""Discord delivery against a real loopback webhook server: never blocks the loop, retries with
back-off, honours 429 ``retry_after`` (body and header), respects the 2000-character limit,
bounds its queue (counted drops, critical alerts first), drains on shutdown within a bound, and
never lets a secret into a post or a log line."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator

import pytest

from perpbot.alerts.discord import DeliveryPolicy, DiscordNotifier, fit, utf16_len
from tests.alerts.webhook import TOKEN, Reply, WebhookServer

API_KEY = "AKfake0123456789apikeyABCDEF"
API_SECRET = "SKfake9876543210secretZYXWVU"
FAST = DeliveryPolicy(backoff_s=0.05, backoff_max_s=0.2, timeout_s=2.0, drain_s=5.0)


@pytest.fixture
async def server() -> AsyncIterator[WebhookServer]:
    s = await WebhookServer().start()
    yield s
    await s.stop()


def _dead_url() -> str:
    """A webhook URL on a loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/webhooks/1/{TOKEN}"


def _notifier(url: str, policy: DeliveryPolicy = FAST, tag: str = "") -> DiscordNotifier:
    return DiscordNotifier(url, tag=tag, secrets=(API_KEY, API_SECRET), policy=policy)


async def _until(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_posts_in_order_with_the_mode_tag_and_mentions_disabled(server: WebhookServer) -> None:
    n = _notifier(server.url, tag="[DEMO]")
    for i in range(3):
        await n.notify("info", f"message {i}")
    await n.aclose()
    assert server.contents() == ["[DEMO] message 0", "[DEMO] message 1", "[DEMO] message 2"]
    assert all(p.payload["allowed_mentions"] == {"parse": []} for p in server.posts)
    assert n.stats.sent == 3 and n.stats.failed == 0 and n.stats.dropped == 0


async def test_notify_returns_at_once_while_the_webhook_hangs(server: WebhookServer) -> None:
    server.script = [Reply(hang=True)]
    n = _notifier(server.url)
    t0 = time.perf_counter()
    for i in range(50):
        await n.notify("entry", f"m{i}")
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.05, elapsed  # 50 alerts queued without waiting on the network
    await _until(lambda: len(server.posts) == 1)
    # the loop is free: other coroutines run while the post hangs
    ticks = 0
    for _ in range(10):
        await asyncio.sleep(0.01)
        ticks += 1
    assert ticks == 10 and n.stats.sent == 0
    server.release.set()
    await n.aclose()
    assert n.stats.sent == 50 and server.contents() == [f"m{i}" for i in range(50)]


async def test_429_with_retry_after_in_the_body_is_honoured(server: WebhookServer) -> None:
    server.script = [Reply(status=429, retry_after_body=0.4)]
    n = _notifier(server.url)
    await n.notify("close", "after the limit")
    await n.notify("close", "next one")
    await n.aclose()
    assert server.contents() == ["after the limit", "after the limit", "next one"]
    gap = server.posts[1].at - server.answered[0]
    assert gap >= 0.38, gap  # waited what Discord said, not the 0.05 s back-off
    assert n.stats.rate_limited == 1 and n.stats.sent == 2 and n.stats.failed == 0


async def test_429_with_only_the_retry_after_header_is_honoured(server: WebhookServer) -> None:
    server.script = [Reply(status=429, retry_after_header="1")]
    n = _notifier(server.url)
    await n.notify("info", "x")
    await n.aclose()
    assert len(server.posts) == 2
    assert server.posts[1].at - server.answered[0] >= 0.98
    assert n.stats.sent == 1


async def test_a_429_longer_than_the_policy_allows_gives_the_message_up(server: WebhookServer) -> None:
    server.script = [Reply(status=429, retry_after_body=3600.0)]
    n = _notifier(server.url)
    await n.notify("info", "x")
    await n.aclose()
    assert len(server.posts) == 1 and n.stats.failed == 1 and n.stats.sent == 0


async def test_an_exhausted_bucket_delays_the_next_post(server: WebhookServer) -> None:
    server.script = [Reply(headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "0.3"})]
    n = _notifier(server.url)
    await n.notify("info", "a")
    await n.notify("info", "b")
    await n.aclose()
    assert server.contents() == ["a", "b"]
    assert server.posts[1].at - server.answered[0] >= 0.28
    assert n.stats.rate_limited == 0  # no 429 was earned


async def test_5xx_is_retried_with_exponential_back_off(server: WebhookServer) -> None:
    server.script = [Reply(status=500), Reply(status=502), Reply(status=503)]
    n = _notifier(server.url, DeliveryPolicy(backoff_s=0.1, backoff_max_s=10.0))
    await n.notify("entry", "x")
    await n.aclose()
    assert server.contents() == ["x"] * 4
    gaps = [server.posts[i + 1].at - server.answered[i] for i in range(3)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39, gaps  # 0.1, 0.2, 0.4 s
    assert n.stats.sent == 1 and n.stats.retries == 3


async def test_gives_up_after_max_attempts_and_goes_on(server: WebhookServer) -> None:
    server.script = [Reply(status=500)] * 3
    n = _notifier(server.url, DeliveryPolicy(max_attempts=3, backoff_s=0.01))
    await n.notify("info", "lost")
    await n.notify("info", "next")
    await n.aclose()
    assert server.contents() == ["lost"] * 3 + ["next"]
    assert n.stats.failed == 1 and n.stats.sent == 1


async def test_a_4xx_is_permanent_and_not_retried(server: WebhookServer) -> None:
    server.script = [Reply(status=404)]
    n = _notifier(server.url)
    await n.notify("info", "x")
    await n.aclose()
    assert len(server.posts) == 1 and n.stats.failed == 1 and n.stats.retries == 0


async def test_a_slow_answer_times_out_and_is_retried(server: WebhookServer) -> None:
    server.script = [Reply(delay_s=1.0)]
    n = _notifier(server.url, DeliveryPolicy(timeout_s=0.2, backoff_s=0.05))
    t0 = time.monotonic()
    await n.notify("info", "slow")
    await _until(lambda: n.stats.sent == 1)
    assert time.monotonic() - t0 < 0.9  # did not wait for the slow answer
    assert len(server.posts) == 2 and n.stats.retries == 1
    await n.aclose()


async def test_network_errors_are_retried_then_given_up() -> None:
    n = _notifier(_dead_url(), DeliveryPolicy(max_attempts=3, backoff_s=0.01))
    await n.notify("info", "x")
    await _until(lambda: n.stats.failed == 1)
    assert n.stats.retries == 2 and n.stats.sent == 0
    await n.aclose()


def test_fit_respects_discords_limit_in_utf16_units() -> None:
    assert fit("short") == "short"
    long = "🛑" * 1500 + "x" * 10  # astral emoji: two UTF-16 units each
    cut = fit(long)
    assert utf16_len(cut) <= 2000 and cut.endswith("(truncated)")
    assert utf16_len(fit("y" * 2000)) == 2000 and fit("y" * 2000) == "y" * 2000


async def test_long_messages_are_cut_to_2000(server: WebhookServer) -> None:
    n = _notifier(server.url, tag="[PAPER]")
    await n.notify("alert", "ä" * 5000)
    await n.aclose()
    content = server.contents()[0]
    assert content.startswith("[PAPER] ä") and utf16_len(content) <= 2000 and content.endswith("(truncated)")


async def test_a_full_queue_drops_with_a_count_and_stays_bounded(
    server: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = [Reply(hang=True)]
    n = _notifier(server.url, DeliveryPolicy(queue_size=5, backoff_s=0.01))
    await n.notify("info", "first")
    await _until(lambda: len(server.posts) == 1)  # in flight, hanging
    with caplog.at_level(logging.WARNING, logger="perpbot.alerts.discord"):
        accepted = [n.notify_nowait("info", f"m{i}") for i in range(20)]
    assert accepted == [True] * 5 + [False] * 15
    assert n.pending == 6 and n.stats.dropped == 15
    assert sum("queue full" in r.getMessage() for r in caplog.records) == 1  # one warning, not 15
    server.release.set()
    await n.aclose()
    contents = server.contents()
    assert contents[0] == "first"
    assert contents[1].startswith("⚠️ 15 earlier alert(s) dropped") and contents[1].endswith("m0")
    assert contents[2:] == ["m1", "m2", "m3", "m4"]


async def test_critical_alerts_evict_the_oldest_ordinary_one(server: WebhookServer) -> None:
    server.script = [Reply(hang=True)]
    n = _notifier(server.url, DeliveryPolicy(queue_size=3))
    await n.notify("info", "first")
    await _until(lambda: len(server.posts) == 1)
    for i in range(3):
        await n.notify("info", f"m{i}")
    await n.notify("emergency", "EMERGENCY")
    await n.notify("kill_switch", "KILL")
    await n.notify("emergency", "EMERGENCY 2")
    await n.notify("emergency", "dropped: all queued are critical")
    server.release.set()
    await n.aclose()
    assert [c.split("\n")[-1] for c in server.contents()] == ["first", "EMERGENCY", "KILL", "EMERGENCY 2"]
    assert n.stats.dropped_kinds == {"info": 3, "emergency": 1}


async def test_shutdown_drains_the_queue(server: WebhookServer) -> None:
    server.script = [Reply(delay_s=0.1)] * 5
    n = _notifier(server.url)
    for i in range(5):
        await n.notify("close", f"c{i}")
    await n.aclose()
    assert server.contents() == [f"c{i}" for i in range(5)] and n.stats.undelivered_at_close == 0
    assert not n.notify_nowait("info", "after close")  # refused, counted
    assert n.stats.dropped == 1 and len(server.posts) == 5


async def test_shutdown_wait_is_bounded(server: WebhookServer) -> None:
    server.script = [Reply(hang=True)]
    n = _notifier(server.url)
    for i in range(4):
        await n.notify("close", f"c{i}")
    await _until(lambda: len(server.posts) == 1)
    t0 = time.monotonic()
    await n.aclose(drain_s=0.3)
    assert time.monotonic() - t0 < 1.0
    assert n.stats.undelivered_at_close == 4 and n.stats.sent == 0


async def test_notify_nowait_from_another_thread_is_handed_to_the_loop(server: WebhookServer) -> None:
    n = _notifier(server.url)
    await n.notify("info", "from the loop")  # the worker knows its loop
    t = threading.Thread(target=lambda: n.notify_nowait("alert", "from a thread"))
    t.start()
    t.join()
    await _until(lambda: n.stats.sent == 2)
    await n.aclose()
    assert server.contents() == ["from the loop", "from a thread"]


async def test_disabled_without_a_url_logs_the_alert(caplog: pytest.LogCaptureFixture) -> None:
    n = _notifier("")
    with caplog.at_level(logging.INFO, logger="perpbot.alerts.discord"):
        await n.notify("info", "only logged")
    await n.aclose()
    assert not n.enabled and n.stats.queued == 0
    assert "only logged" in caplog.text


async def test_no_secret_in_any_post_or_log_line(
    server: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Alerts quoting the key, the secret or the webhook URL (an exception text would) are
    masked; so are the notifier's log lines, including a 4xx body that echoes the URL."""
    server.script = [Reply(status=500), Reply(status=400, echo=True)]
    n = _notifier(server.url, tag="[DEMO]")
    with caplog.at_level(logging.DEBUG):
        await n.notify("alert", f"ccxt said: apiKey={API_KEY}&signature=x secret {API_SECRET}")
        await n.notify("alert", f"cannot reach {server.url} (token {TOKEN})")
        await n.notify("info", "plain")
        await n.aclose()
    dead = _notifier(_dead_url(), DeliveryPolicy(max_attempts=2, backoff_s=0.01))
    with caplog.at_level(logging.DEBUG):
        await dead.notify("alert", "unreachable")
        await _until(lambda: dead.stats.failed == 1)
        await dead.aclose()
    assert len(server.posts) == 4
    recorded = [p.payload["content"] for p in server.posts] + [r.getMessage() for r in caplog.records]
    recorded.append(caplog.text)
    for text in recorded:
        for secret in (API_KEY, API_SECRET, TOKEN, server.url):
            assert secret not in text, (secret, text)
    assert "***" in server.posts[0].payload["content"]
    assert TOKEN not in repr(n) and str(server.port) not in repr(n)
