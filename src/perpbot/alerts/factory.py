"""The notifier of a run: Discord when ``DISCORD_WEBHOOK_URL`` is set, tagged by mode.

Tags (issue 10 §1, SPEC §11): ``[DEMO]`` for Binance demo trading (``BINANCE_ENV=demo`` or
``BINANCE_TESTNET=true``), ``[TESTNET]`` for a custom venue (``BINANCE_ENV=custom``: a testnet
or ``perpbot simulate``), ``[PAPER]`` for ``perpbot paper``; live carries no tag, so an untagged
alert always means real money.
"""

from __future__ import annotations

from perpbot.alerts.discord import DeliveryPolicy, DiscordNotifier
from perpbot.config import AppConfig

MODE_TAGS = {"live": "", "demo": "[DEMO]", "custom": "[TESTNET]", "paper": "[PAPER]"}


def tag_for(mode: str) -> str:
    """The alert prefix of a run mode (``live`` / ``demo`` / ``custom`` / ``paper``, any case).
    An unknown mode is tagged with its own name rather than passing for live."""
    m = mode.strip().lower()
    return MODE_TAGS.get(m, f"[{m.upper()}]")


def build_notifier(cfg: AppConfig, mode: str, policy: DeliveryPolicy | None = None) -> DiscordNotifier:
    """A notifier that knows every secret of ``cfg`` (so none can leak into an alert); without a
    webhook URL it only logs the alerts."""
    return DiscordNotifier(
        cfg.discord_webhook_url,
        tag=tag_for(mode),
        secrets=(cfg.api_key, cfg.api_secret),
        policy=policy,
    )
