"""The runtime's stop drains the Discord notifier, also when the live view wraps it (the view
forwards alerts but does not own the webhook)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from perpbot.alerts.factory import build_notifier
from perpbot.config import load_config
from perpbot.runtime.app import Runtime, RuntimeOptions
from perpbot.runtime.live_view import LiveSnapshot, LiveView
from tests.alerts.webhook import Reply, WebhookServer


async def test_close_drains_the_webhook_behind_the_live_view(tmp_path: Path) -> None:
    hook = await WebhookServer().start()
    try:
        hook.script = [Reply(delay_s=0.2), Reply(delay_s=0.2)]
        cfg = load_config({"SYMBOLS": "XRPUSDT", "DISCORD_WEBHOOK_URL": hook.url}, env_file=None)
        notifier = build_notifier(cfg, "demo")
        view = LiveView(LiveSnapshot.for_symbols(["XRPUSDT"], "demo"), Console(file=io.StringIO()))
        opts = RuntimeOptions(mode="DEMO", journal_path=tmp_path / "j.sqlite3", models_root=tmp_path)
        rt = Runtime(cfg, opts, notifier=notifier, view=view, out=lambda _line: None)
        await rt.alert("info", "through the view")
        rt.alert_nowait("daily_loss", "from the risk manager")
        await rt.close()
        assert hook.contents() == ["[DEMO] through the view", "[DEMO] from the risk manager"]
        assert notifier.stats.sent == 2 and notifier.pending == 0
        assert [k for _t, k, _x in view.snapshot.alerts] == ["info", "daily_loss"]
    finally:
        await hook.stop()
