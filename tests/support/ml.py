"""Shared pieces of the ML tests: relaxed rule parameters, small synthetic markets on disk and an
ONNX session.

Why relaxed parameters: with the production rule (score 3, ADX 25, volume 2.5×) a few weeks of
synthetic candles give too few LONG/SHORT rows to train on; the relaxed set gives hundreds, so
every training/tuning/dataset test runs in seconds on the same, deterministic market.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from perpbot.config import SignalParams
from perpbot.data.schema import data_path
from perpbot.data.store import save_market
from perpbot.data.synth import synth_market

LOOSE = SignalParams(
    atr_sl_mult=1.5, atr_tp_mult=2.0, signal_threshold=2, adx_threshold=0.0, vol_multiplier=1.0
)
# The same parameters as environment variables, for runs through the CLI and the scripts.
LOOSE_ENV = {
    "SIGNAL_THRESHOLD": "2",
    "ADX_THRESHOLD": "0",
    "VOL_MULTIPLIER": "1.0",
    "ATR_SL_MULT": "1.5",
    "ATR_TP_MULT": "2.0",
}


def write_market(data_dir: Path, symbol: str, days: int = 20, seed: int = 11) -> Path:
    """A synthetic market for ``symbol`` at ``<data_dir>/<symbol>/combined_15m.parquet``."""
    return save_market(synth_market(days, seed, symbol=symbol), data_path(data_dir, symbol))


def cpu_session(onnx_bytes: bytes) -> ort.InferenceSession:
    """An onnxruntime session on the CPU provider, as the live filter builds it."""
    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
