"""The one market-data schema (``../shared/data/README.md``), shared by every reader and writer.

A file ``data/<symbol lowercase>/combined_15m.parquet`` holds, per 15-minute candle open time
(UTC, strictly increasing, no gaps, no duplicates), the primary symbol's OHLCV, the two
correlation symbols' OHLCV under the *role* suffixes ``_btc`` and ``_eth`` (whatever symbols
fill those roles), the forward-filled ``funding_rate`` and the open-interest change ``oi_change``.
"""

from __future__ import annotations

from pathlib import Path

from perpbot.symbols import symbol_dir_name

INDEX_NAME = "timestamp"
OHLCV = ("open", "high", "low", "close", "volume")
BTC_COLS = tuple(f"{c}_btc" for c in OHLCV)
ETH_COLS = tuple(f"{c}_eth" for c in OHLCV)
MICRO_COLS = ("oi_change", "funding_rate")
ALL_COLUMNS = OHLCV + BTC_COLS + ETH_COLS + MICRO_COLS
DATA_FILE_NAME = "combined_15m.parquet"
BAR_MS = 15 * 60_000


def data_path(data_dir: Path, symbol: str) -> Path:
    """``<data_dir>/<symbol lowercase>/combined_15m.parquet``."""
    return Path(data_dir) / symbol_dir_name(symbol) / DATA_FILE_NAME


def model_dir(models_root: Path, symbol: str) -> Path:
    """``<models_root>/<symbol lowercase>/``."""
    return Path(models_root) / symbol_dir_name(symbol)
