"""The names of the 26 model features (SPEC §4) and of the feature frame's extra columns.

Why a module of their own: models, the feature code and the bot's contexts all key on these
names; keeping them apart lets ``ml.contexts`` use them without importing the feature code.
``ml.features`` re-exports every name here.
"""

from __future__ import annotations

FEATURE_SCHEMA_VERSION = 1

FEATURE_COLS: tuple[str, ...] = (
    "rsi",
    "macd_hist",
    "bb_pct",
    "ema_align",
    "stoch_k",
    "stoch_d",
    "atr_pct",
    "vol_ratio",
    "ret_1",
    "ret_3",
    "ret_5",
    "signal_strength",
    "side",
    "btc_ret_1",
    "btc_ret_3",
    "btc_ret_5",
    "eth_ret_1",
    "eth_ret_3",
    "eth_ret_5",
    "primary_btc_rs",
    "primary_eth_rs",
    "oi_change",
    "funding_rate",
    "oi_change_ma5",
    "oi_price_spread",
    "adx",
)
SIGNAL_STRENGTH_INDEX = FEATURE_COLS.index("signal_strength")
SIDE_INDEX = FEATURE_COLS.index("side")
OPTIONAL_FEATURES: tuple[str, ...] = ("oi_change", "funding_rate", "oi_change_ma5", "oi_price_spread")
CORRELATION_FEATURES: tuple[str, ...] = FEATURE_COLS[13:21]
# Features that must be finite after warm-up whatever the market file holds.
BASE_FEATURES: tuple[str, ...] = tuple(
    c for c in FEATURE_COLS if c not in OPTIONAL_FEATURES and c not in CORRELATION_FEATURES
)
EXTRA_COLS: tuple[str, ...] = ("signal", "long_score", "short_score", "vol_surge", "atr", "close", "adx_raw")
FRAME_COLS: tuple[str, ...] = FEATURE_COLS + EXTRA_COLS
