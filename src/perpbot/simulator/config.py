"""Options of ``perpbot simulate`` (validated once; every module reads this frozen object)."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from pathlib import Path

from perpbot.errors import ConfigError

DEFAULT_API_KEY = "perpbotSimulatorKey0000000000000000000000000000000000000000000001"
DEFAULT_API_SECRET = "perpbotSimulatorSecret00000000000000000000000000000000000000000001"


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    symbols: tuple[str, ...]
    data_dir: Path | None = None
    from_ms: int | None = None
    days: int = 30
    speed: float = 1.0  # candles per wall second; 0 = only POST /sim/advance moves time
    balance: float = 1000.0
    host: str = "127.0.0.1"
    port: int = 0
    allow_remote: bool = False
    api_key: str = DEFAULT_API_KEY
    api_secret: str = DEFAULT_API_SECRET
    faults_file: Path | None = None
    ws_max_age_s: float = 86_400.0  # Binance closes every connection after 24 h
    ping_interval_s: float = 180.0  # Binance pings every 3 minutes
    pong_timeout_s: float = 600.0  # and drops a connection without a pong for 10 minutes
    max_ws_messages_per_s: int = 10
    max_streams: int = 1024
    weight_limit: int = 2400
    # True (``perpbot paper``): request limits count on the replay time paced by the wall clock
    # (``weights.PacedReplayClock``) instead of the wall clock alone.
    replay_limits: bool = False
    max_body_bytes: int = 64 * 1024
    listen_key_validity_s: float = 3600.0
    # Costs, as the backtest takes them from the app configuration (TAKER_FEE, MAKER_FEE,
    # SLIPPAGE_BPS), so that the server and the backtest price fills alike.
    taker_fee: float = 0.0005
    maker_fee: float = 0.0002
    slippage_bps: float = 1.0
    # > 0: split every fill into executions of at most this quantity (PARTIALLY_FILLED … FILLED
    # on the user stream), the engine's knob for exercising clients' per-execution handling.
    max_fill_qty_per_execution: float = 0.0

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ConfigError("--symbols: at least one symbol is needed")
        if not (0 <= self.port <= 65535):
            raise ConfigError(f"--port={self.port}: must be in 0..65535")
        if self.speed < 0 or math.isnan(self.speed):
            raise ConfigError(f"--speed={self.speed}: must be >= 0 (0 = advance only via /sim/advance)")
        if not (self.balance > 0 and math.isfinite(self.balance)):
            raise ConfigError(f"--balance={self.balance}: must be a positive number")
        if self.ws_max_age_s <= 0:
            raise ConfigError(f"--ws-max-age={self.ws_max_age_s}: must be > 0 seconds")
        if not self.api_key.isalnum() or not self.api_secret.isalnum():
            raise ConfigError("--api-key/--api-secret: letters and digits only")
        if not self.allow_remote and not is_loopback(self.host):
            raise ConfigError(f"--host={self.host}: not a loopback address; pass --allow-remote to serve it")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
