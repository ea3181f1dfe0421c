"""What the chaos run (issue 10 §4, ``runtime/chaos.py``) injects and with which parameters.

``FAULTS`` lists every fault kind of ``perpbot simulate`` (``simulator/faults.py``) in the shapes
the bot must survive; ``fault_plan`` spreads them over the replay at seeded candles: each shape
once in the first ``FIRST_PART`` of the run, then seeded random picks anywhere. ``LOOSE`` is the
configuration the bots run with, and says what it loosens and why.
"""

from __future__ import annotations

import random
from typing import Any

FIRST_PART = 0.4
BAR_MS = 15 * 60_000
SYMBOLS = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")
LATE_INCOME_MS = 4 * 3_600_000
FUNDING_INTERVAL_MAX_MS = 8 * 3_600_000  # the longest funding interval of Binance USDT-M
CORRELATION = ("BTCUSDT", "ETHUSDT")
# Loose parameters, so that all three symbols trade through the month (several trades a day
# each). The strategy's gates are opened (threshold 2 of 4 signals, no ADX or volume filter), and
# LEVERAGE is 3 instead of 10: positions a third of the size, so that a day's losses reach the
# fixed 5 % daily-loss limit on bad days only instead of by mid-morning on most days (the limit
# itself is unchanged and checked). The kill switch is not loosened either: the harness plays
# the operator who resets a tripped one (``ChaosSettings.ks_reset_candles``).
LOOSE = {
    "SIGNAL_THRESHOLD": "2",
    "ADX_THRESHOLD": "0",
    "VOL_MULTIPLIER": "1.0",
    "ATR_SL_MULT": "1.5",
    "ATR_TP_MULT": "2.0",
    "LEVERAGE": "3",
}
# Every fault kind of the simulator (issue 8 §4), in the shapes the bot must survive. A fault is
# armed at its seeded candle and fires on the next request (or event) it matches; the ones
# marked ``"while": "position"`` are armed only while a position is open, so that they meet a
# trade's own requests (its close, its SL/TP cancels) or, for ``adl``, have something to hit.
FAULTS: tuple[dict[str, Any], ...] = (
    {"kind": "http_error", "status": 502, "count": 2},  # the next two requests of any kind
    {"kind": "http_error", "status": 500, "endpoint": "/fapi/v1/algoOrder", "method": "POST", "count": 1},
    {
        "kind": "http_error",
        "status": 503,
        "endpoint": "/fapi/v1/algoOrder",
        "method": "DELETE",
        "count": 1,
        "while": "position",
    },
    {"kind": "unknown_after_execution", "endpoint": "/fapi/v1/order", "count": 1},  # executed, reply lost
    {"kind": "unknown_after_execution", "endpoint": "/fapi/v1/order", "count": 1, "while": "position"},
    {"kind": "latency", "ms": 11_000, "endpoint": "/fapi/v1/order", "count": 1},  # timeout, then executed
    {"kind": "rate_limit_burst", "count": 1},  # 429 / -1003
    {"kind": "time_skew", "ms": 30_000, "seconds": 2},  # -1021
    {"kind": "reject_orders", "code": -2019, "order_kind": "order", "count": 1},
    {"kind": "reject_orders", "code": -1008, "order_kind": "algo", "count": 1},  # algo placement fails
    {"kind": "drop_connection", "stream": "market"},
    {"kind": "drop_connection", "stream": "private"},
    {"kind": "silent_stream", "stream": "market", "count": 5},  # one candle of every symbol
    {"kind": "silent_stream", "stream": "private", "count": 3},  # the next three user events lost
    {"kind": "expire_listen_key"},
    {"kind": "adl", "fraction": 0.5, "while": "position"},
    # Late and out-of-order user-stream events: an execution after a later one (and after the
    # ACCOUNT_UPDATE it caused), an algo update (a TRIGGERED one names the close order) after
    # the next event, two executions swapped.
    {"kind": "late_events", "event": "ORDER_TRADE_UPDATE", "execution_type": "TRADE", "after": 2, "count": 2},
    {"kind": "late_events", "event": "ALGO_UPDATE", "after": 3, "while": "position"},
    {"kind": "swap_events", "event": "ORDER_TRADE_UPDATE", "execution_type": "TRADE", "count": 2},
    # The income history lags: the next two funding rows show only 4 h of replay time after
    # their settlement, so a trade closed meanwhile is booked without its funding and must get it
    # later (the bot's watch of booked trades). The 12-hour shape makes a SIGKILL between the
    # booking and the row likely: the restarted process must pick the watch up from the journal.
    {
        "kind": "late_income",
        "income_type": "FUNDING_FEE",
        "ms": LATE_INCOME_MS,
        "count": 2,
        "while": "position",
    },
    {"kind": "late_income", "income_type": "FUNDING_FEE", "ms": 3 * LATE_INCOME_MS, "while": "position"},
)
HARNESS_KEYS = ("while",)  # harness-only keys, not sent to the simulator


def schedule(rng: random.Random, candles: int, n: int, first: int = 2) -> list[int]:
    """``n`` seeded candle indexes in ``[first, candles - 2)``, sorted."""
    hi = max(first + 1, candles - 2)
    return sorted(rng.randrange(first, hi) for _ in range(n))


def fault_plan(
    rng: random.Random, candles: int, per_day: float, first_part: float = FIRST_PART
) -> list[tuple[int, dict[str, Any]]]:
    """Every shape of ``FAULTS`` at least once, then seeded random picks, at seeded candles
    (none when ``per_day`` is 0)."""
    if per_day <= 0:
        return []
    n = max(len(FAULTS), round(per_day * candles / 96))
    # The first of each shape in the first part of the run, so that one waiting for an order (a
    # reject, a lost reply) or a position (ADL) still meets one well before the end; the extra
    # ones anywhere.
    first = list(FAULTS)
    rng.shuffle(first)
    extra = [rng.choice(FAULTS) for _ in range(n - len(FAULTS))]
    plan = [
        *zip(schedule(rng, max(4, int(candles * first_part)), len(first)), first, strict=True),
        *zip(schedule(rng, candles, len(extra)), extra, strict=True),
    ]
    return sorted(plan, key=lambda p: p[0])


def needs_position(fault: dict[str, Any]) -> bool:
    """Armed only while a position is open (``FAULTS``)."""
    return fault.get("while") == "position"


def lead_candles(fault: dict[str, Any]) -> int:
    """Candles a fault needs after it is armed to play out before the replay ends. A row held
    back by ``late_income`` that would show only after the end could never reach the journal
    (the ledger check would call that a loss): such a fault is armed only while the next
    settlement, its delay and two hours to book it still fit."""
    if fault["kind"] != "late_income":
        return 0
    return -(-(FUNDING_INTERVAL_MAX_MS + int(fault["ms"]) + 2 * 3_600_000) // BAR_MS)


def wire(fault: dict[str, Any]) -> dict[str, Any]:
    """The fault as ``POST /sim/faults`` takes it (without the harness's own keys)."""
    return {k: v for k, v in fault.items() if k not in HARNESS_KEYS}
