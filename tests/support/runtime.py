"""The runtime against a ``perpbot simulate`` child, configured the way the runtime tests need it:
loose strategy parameters (it trades within a few simulated days), ML off, fast reconnects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perpbot.exchange.binance.ws import StreamSettings
from perpbot.runtime.app import RuntimeOptions
from perpbot.simulator.child import SimulatorChild
from tests.support.ml import LOOSE_ENV

TRADED = ("XRPUSDT", "TRXUSDT")
FAST_STREAM = StreamSettings(silence_s=600.0, backoff_s=0.05, backoff_max_s=0.5)


def loopback_env(sim: SimulatorChild, traded: tuple[str, ...] = TRADED, **extra: str) -> dict[str, str]:
    """The configuration that points at the simulator child with its test keys."""
    base = {**sim.env(), **LOOSE_ENV, "SYMBOLS": ",".join(traded), "CORRELATION_SYMBOLS": "BTCUSDT,ETHUSDT"}
    return {**base, **extra}


def loopback_options(journal: Path, **overrides: Any) -> RuntimeOptions:
    """Runtime options for a test: short ticks and alignment wait, two connect attempts."""
    base: dict[str, Any] = {
        "mode": "custom",
        "journal_path": journal,
        "models_root": journal.parent / "models",
        "use_ml": False,
        "heartbeat_s": 3600.0,
        "tick_s": 0.05,
        "align_wait_s": 2.0,
        "connect_attempts": 2,
        "stream": FAST_STREAM,
        "user_stream": FAST_STREAM,
    }
    return RuntimeOptions(**{**base, **overrides})
