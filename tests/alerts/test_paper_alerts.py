"""``perpbot paper`` alerts: with a Discord webhook configured (the loopback server of
``webhook.py``), a paper replay posts its entry and close alerts tagged ``[PAPER]`` and keeps its
in-memory record; a webhook that never answers neither slows the replay nor holds its stop past
the bounded drain; without a webhook nothing is posted and nothing fails."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from perpbot.alerts.discord import DeliveryPolicy
from perpbot.backtest.metrics import canonical_trade_line
from perpbot.config import load_config
from perpbot.engine.notifier import RecordingNotifier
from perpbot.runtime.paper import PaperOptions
from perpbot.runtime.paper_run import PaperResult, paper_notifier, run_paper
from perpbot.simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET
from tests.alerts.webhook import TOKEN, Reply, WebhookServer
from tests.support.ml import LOOSE_ENV

OPTS = PaperOptions(
    symbols=("XRPUSDT",), correlation=("BTCUSDT", "ETHUSDT"), data_dir=None, from_=None, days=1
)
DRAIN_S = 1.0
POST_TIMEOUT_S = 120.0  # longer than any bound below: a drain that waited on it would show


@pytest.fixture
async def hook() -> AsyncIterator[WebhookServer]:
    s = await WebhookServer().start()
    yield s
    await s.stop()


async def _paper(
    tmp_path: Path, name: str, env: dict[str, str], drain_s: float = 30.0
) -> tuple[PaperResult, float]:
    """One day of the demo's synthetic market; returns the result and how long the run took
    from its last candle to its return (the stop: streams, workers, journal, alert drain)."""
    last: list[float] = []
    res = await run_paper(
        env,
        OPTS,
        tmp_path / name / "journal.sqlite3",
        tmp_path / "no-models",
        use_ml=False,
        progress=lambda _step, _total: last.append(time.monotonic()),
        alert_policy=DeliveryPolicy(backoff_s=0.05, timeout_s=POST_TIMEOUT_S, drain_s=drain_s),
    )
    assert res.steps == 96 and res.bot_errors == 0
    return res, time.monotonic() - last[-1]


def _secrets(hook: WebhookServer) -> list[str]:
    return [TOKEN, hook.url, DEFAULT_API_KEY, DEFAULT_API_SECRET]


async def test_a_paper_replay_posts_its_entry_and_close_alerts_tagged_paper(
    hook: WebhookServer, tmp_path: Path
) -> None:
    res, _ = await _paper(tmp_path, "ok", {**LOOSE_ENV, "DISCORD_WEBHOOK_URL": hook.url})
    kinds = [k for k, _ in res.alerts]
    assert kinds.count("entry") >= 2 and kinds.count("close") >= 2, kinds
    # Every recorded alert was posted, in order, tagged, and the record (the report's, the live
    # view's) still holds the untagged text.
    posts = hook.contents()
    assert posts == [f"[PAPER] {text}" for _, text in res.alerts]
    assert any("entry" in p for p in posts) and any("close" in p for p in posts)
    assert not any(secret in p for p in posts for secret in _secrets(hook))
    assert res.alert_delivery is not None
    assert res.alert_delivery.sent == len(res.alerts) and res.alert_delivery.undelivered_at_close == 0

    # A webhook that never answers: the replay trades exactly the same, every alert is still
    # recorded, and the stop gives up on the queue after the bounded drain (not the post timeout).
    hook.script = [Reply(hang=True) for _ in range(1000)]
    hung, stop_s = await _paper(tmp_path, "hung", {**LOOSE_ENV, "DISCORD_WEBHOOK_URL": hook.url}, DRAIN_S)
    assert [canonical_trade_line(t) for t in hung.trades] == [canonical_trade_line(t) for t in res.trades]
    assert hung.alerts == res.alerts
    assert hung.alert_delivery is not None and hung.alert_delivery.sent == 0
    assert hung.alert_delivery.undelivered_at_close == len(res.alerts)
    assert DRAIN_S <= stop_s < DRAIN_S + 30.0 < POST_TIMEOUT_S
    # No alert waited on the hung post (one that did would have held the replay for its timeout).
    assert hung.wall_s < POST_TIMEOUT_S


async def test_the_paper_notifier_redacts_every_secret_and_needs_no_webhook(
    hook: WebhookServer,
) -> None:
    keys = {"BINANCE_API_KEY": DEFAULT_API_KEY, "BINANCE_API_SECRET": DEFAULT_API_SECRET}
    cfg = load_config({**keys, "DISCORD_WEBHOOK_URL": hook.url}, env_file=None)
    record = RecordingNotifier()
    notifier, discord = paper_notifier(cfg, record, DeliveryPolicy(drain_s=10.0))
    assert discord is not None
    await notifier.notify("info", f"boom at {hook.url} with {DEFAULT_API_KEY} / {DEFAULT_API_SECRET}")
    aclose = notifier.aclose
    await aclose()
    assert len(hook.posts) == 1 and hook.contents()[0].startswith("[PAPER] boom at ***")
    assert not any(secret in hook.contents()[0] for secret in _secrets(hook))
    assert len(record.messages) == 1
    # No webhook: the record alone, nothing to post, nothing to close.
    plain = load_config(keys, env_file=None)
    alone, none = paper_notifier(plain, record)
    assert alone is record and none is None
