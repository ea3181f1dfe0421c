"""Backtest test helpers: deterministic synthetic markets, a tiny hand-built ONNX filter, and the
trade-rule checkers every backtest test applies (risk rules by sweeping trade intervals, exchange
rules per trade)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from perpbot.config import AppConfig, SignalParams
from perpbot.data.synth import synth_market
from perpbot.domain.types import ClosedTrade, SymbolFilters
from perpbot.exchange.filters import is_multiple

DAY_MS = 86_400_000
SYMS3 = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")
SYMS4 = ("XRPUSDT", "TRXUSDT", "DOGEUSDT", "ADAUSDT")
SYNTH_DAYS = 60
SYNTH_SEED = 11

# Loose signal parameters: thousands of signals on 60 synthetic days, so positions overlap and the
# risk manager's limits (3 open, 2 per direction, 1 per symbol) are actually reached.
LOOSE = SignalParams(signal_threshold=2, adx_threshold=0.0, vol_multiplier=1.2)


@pytest.fixture(scope="session")
def markets4() -> dict[str, pd.DataFrame]:
    """60 synthetic days for four symbols (seed 11). Read-only."""
    return {s: synth_market(SYNTH_DAYS, SYNTH_SEED, symbol=s) for s in SYMS4}


def loose_config(symbols: Sequence[str]) -> AppConfig:
    return AppConfig(symbols=tuple(symbols), default_params=LOOSE)


def risk_violations(trades: Sequence[ClosedTrade], max_open: int = 3, max_same: int = 2) -> list[str]:
    """Sweep the ``[entry, exit)`` intervals in time order (exits before entries at equal times,
    as a reverse closes before it re-enters) and list every breach of the risk rules."""
    events: list[tuple[int, int, int]] = []
    for k, t in enumerate(trades):
        events.append((t.entry_time_ms, 1, k))
        events.append((t.exit_time_ms, 0, k))
    events.sort()
    open_: dict[int, ClosedTrade] = {}
    out: list[str] = []
    for time_ms, kind, k in events:
        if kind == 0:
            open_.pop(k, None)
            continue
        t = trades[k]
        if t.exit_time_ms < t.entry_time_ms:
            out.append(f"trade {k} exits before it enters")
        if any(o.symbol == t.symbol for o in open_.values()):
            out.append(f"{time_ms}: second position on {t.symbol}")
        open_[k] = t
        if len(open_) > max_open:
            out.append(f"{time_ms}: {len(open_)} positions open")
        per_side = Counter(o.side for o in open_.values())
        if per_side[t.side] > max_same:
            out.append(f"{time_ms}: {per_side[t.side]} {t.side.value} positions open")
        if t.exit_time_ms == t.entry_time_ms:
            # Closed at the instant it opened (an emergency close when the stop could not be
            # placed): it counted against the limits at that instant; its exit, sorted before
            # its entry, already passed, so it is removed here.
            open_.pop(k)
    return out


def daily_limit_violations(
    trades: Sequence[ClosedTrade], base: float, max_daily_loss: float = 0.05
) -> list[str]:
    """Entries made while the day's realised net PnL was at or below the loss limit (SPEC §9: a
    level test on the UTC day's closed trades, so a later winner can lift it the same day).

    Closes stamped at the entry's very millisecond may have been handled before or after it
    (another symbol's candle of the same open time), so only a breach that holds even with
    every same-time winner counted and every same-time loser left out is reported."""
    out = []
    limit = -max_daily_loss * base
    for k, t in enumerate(trades):
        day = t.entry_time_ms // DAY_MS
        before = at = 0.0
        for c in trades:
            if c.exit_time_ms // DAY_MS != day or c.exit_time_ms > t.entry_time_ms:
                continue
            if c.exit_time_ms < t.entry_time_ms:
                before += c.net_pnl
            else:
                at += max(c.net_pnl, 0.0)
        if before + at <= limit:
            out.append(f"trade {k} {t.symbol}: entered at {t.entry_time_ms} with the day's PnL {before:.4f}")
    return out


def kill_switch_violations(trades: Sequence[ClosedTrade], trips: Sequence[Mapping[str, Any]]) -> list[str]:
    """Entries of a symbol at or after its kill switch tripped (it latches for the whole run)."""
    first = {}
    for trip in trips:
        first.setdefault(trip["symbol"], int(trip["time_ms"]))
    return [
        f"trade {k} {t.symbol}: entered at {t.entry_time_ms} after the kill switch at {first[t.symbol]}"
        for k, t in enumerate(trades)
        if t.symbol in first and t.entry_time_ms >= first[t.symbol]
    ]


def exchange_violations(
    trades: Sequence[ClosedTrade],
    filters: dict[str, SymbolFilters],
    checked_at: Callable[[ClosedTrade], float] | None = None,
) -> list[str]:
    """Quantities on the symbol's step grid and entry notional ≥ the minimum.

    The exchange checks a MARKET order's notional against the last price when it accepts the
    order (the entry candle's close), not against the fill, which comes later (the next open):
    ``checked_at(trade)`` gives that price. Without it the fill price is used, which is stricter
    — right on runs that never size at the minimum, wrong in general (a minimum-size entry whose
    next open gaps down fills below 5 USDT, as it may on Binance)."""
    out: list[str] = []
    for k, t in enumerate(trades):
        f = filters[t.symbol]
        if not is_multiple(t.quantity, f.step_size) or t.quantity < f.min_qty:
            out.append(f"trade {k} {t.symbol}: quantity {t.quantity!r} off the step {f.step_size}")
        ref = t.entry_price if checked_at is None else checked_at(t)
        if t.quantity * ref < f.min_notional:
            out.append(f"trade {k} {t.symbol}: notional {t.quantity * ref:.4f} < {f.min_notional}")
        if not (t.entry_price > 0 and t.exit_price > 0):
            out.append(f"trade {k} {t.symbol}: non-positive price")
    return out


def tiny_onnx_model(model_dir: Path) -> Path:
    """A hand-built logistic filter saved like a trained model: ``p = sigmoid(0.08·(50 − rsi))``.

    Deterministic on every platform (a dot product and a sigmoid), served by the real ``MLFilter``
    through onnxruntime; with the default threshold 0.55 it rejects signals whose RSI is above
    about 47.5, so it changes the trade list without depending on LightGBM.
    """
    import onnx
    from onnx import TensorProto, helper

    from perpbot.ml import artifacts
    from perpbot.ml.features import FEATURE_COLS

    n = len(FEATURE_COLS)
    w = np.zeros((n, 1))
    w[FEATURE_COLS.index("rsi"), 0] = -0.08
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["z0"]),
            helper.make_node("Add", ["z0", "B"], ["z1"]),
            helper.make_node("Sigmoid", ["z1"], ["p2"]),
            helper.make_node("Reshape", ["p2", "shape"], ["proba"]),
        ],
        "tiny_filter",
        [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, n])],
        [helper.make_tensor_value_info("proba", TensorProto.DOUBLE, [None])],
        initializer=[
            helper.make_tensor("W", TensorProto.DOUBLE, [n, 1], w.ravel().tolist()),
            helper.make_tensor("B", TensorProto.DOUBLE, [1], [4.0]),
            helper.make_tensor("shape", TensorProto.INT64, [1], [-1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = artifacts.build_metadata("lgbm", params={"kind": "hand-built test logistic"}, n_samples=0)
    artifacts.save_model(model_dir, "lgbm", model.SerializeToString(), meta)
    onnx.checker.check_model(model)
    return model_dir
