"""The knobs of the simulated exchange (``SimSettings``), validated once when built.

Separate from the engine because every party that builds a simulated account names them (the
backtester, the hostile runner, the protocol simulator, tests) without needing the engine's code,
and because their meaning is the model's contract: fees, slippage, maintenance margin and the
intra-bar path are what a backtest's figures depend on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FUNDING_INTERVAL_MS = 8 * 3600 * 1000
ADL_CLIENT_ID = "adl_autoclose"  # Binance's client id of an auto-deleveraging order

IntrabarPath = Literal["pessimistic", "ohlc"]


@dataclass(frozen=True, slots=True)
class SimSettings:
    """Knobs of the simulated exchange. Defaults are Binance's VIP-0 USDT-M figures."""

    initial_balance: float = 1000.0
    taker_fee: float = 0.0005
    maker_fee: float = 0.0002
    slippage_bps: float = 1.0  # adverse, on market and triggered conditional fills
    maintenance_margin_rate: float = 0.005
    liquidation_fee_rate: float = 0.0125  # cap of the clearance fee, on the notional at LP
    intrabar_path: IntrabarPath = "pessimistic"
    # False: a triggered conditional order's fill reports ot=MARKET, as live does (SPEC §13 row 3,
    # the worst case the bot must survive). True: ot carries STOP_MARKET / TAKE_PROFIT_MARKET.
    report_original_type: bool = False
    # > 0: split every market fill into TRADE executions of at most this quantity (same order
    # id, PARTIALLY_FILLED … FILLED) so that the bot's per-order aggregation is exercised.
    max_fill_qty_per_execution: float = 0.0
    default_leverage: int = 20  # Binance's initial leverage for most symbols
    bar_ms: int = 15 * 60_000

    def __post_init__(self) -> None:
        if self.intrabar_path not in ("pessimistic", "ohlc"):
            raise ValueError(f"intrabar_path must be 'pessimistic' or 'ohlc', got {self.intrabar_path!r}")
        for name in (
            "taker_fee",
            "maker_fee",
            "slippage_bps",
            "maintenance_margin_rate",
            "liquidation_fee_rate",
            "max_fill_qty_per_execution",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not (0 <= self.maintenance_margin_rate < 1):
            raise ValueError("maintenance_margin_rate must be in [0, 1)")
        if not (1 <= self.default_leverage <= 125):
            raise ValueError("default_leverage must be in 1..125")
        if self.bar_ms <= 0:
            raise ValueError("bar_ms must be > 0")
