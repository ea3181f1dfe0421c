"""The ``late_income`` fault: income rows that show in ``GET /fapi/v1/income`` only a while after
they happened.

Why: Binance's income history lags its ledger. A funding settlement's ``FUNDING_FEE`` row may
appear after a trade that held the position at the settlement was already closed and booked, so
the booking reads no funding and the bot must add the row once it shows (``engine/catchup.py``:
booked trades are watched for a day, across restarts). Without this fault every row was visible
the moment it was booked, and the chaos run never exercised that path.

What it does: the next ``count`` rows booked after the fault was injected that match its
``income_type`` (default ``FUNDING_FEE``; ``any`` for every type) and ``symbol`` are left out of
``GET /fapi/v1/income`` until ``ms`` milliseconds of replay time after their own time. Only the
income history lags: the wallet, the position, ``userTrades`` and the user stream are on time,
as on Binance. A hit is a read whose window held such a row while it was still hidden (a row
nobody asked for in time did nothing); ``withheld`` names each row a read missed, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from perpbot.domain.types import Income
from perpbot.simulator.faults import Fault, FaultBook

RowKey = tuple[str, str, int, str]


def _key(r: Income) -> RowKey:
    return (r.symbol, r.income_type, r.time_ms, r.trade_id)


@dataclass
class LateIncome:
    """Which ledger rows the ``late_income`` faults hold back, and until when (replay ms)."""

    seen: int = 0  # ledger rows already offered to the faults, in booking order
    hidden: dict[RowKey, tuple[int, Fault]] = field(default_factory=dict)

    def claim(self, rows: Sequence[Income], faults: FaultBook) -> None:
        """Offer the rows booked since the last call to the live faults. Called before every
        injection too, so that a fault only ever claims rows booked after it was injected."""
        for r in rows:
            f = faults.take("late_income", None, r.symbol, hit=False, income_type=r.income_type)
            if f is not None:
                self.hidden[_key(r)] = (r.time_ms + int(f.params["ms"]), f)
        self.seen += len(rows)

    def visible(self, rows: Sequence[Income], now_ms: int, wall_ms: int) -> list[Income]:
        """``rows`` without those still held back at replay time ``now_ms``."""
        if not self.hidden:
            return list(rows)
        out = []
        for r in rows:
            held = self.hidden.get(_key(r))
            if held is None or now_ms >= held[0]:
                out.append(r)
                continue
            f = held[1]
            f.hits += 1
            if f.first_hit_ms is None:
                f.first_hit_ms = wall_ms
            tag = f"{r.symbol}:{r.income_type}:{r.time_ms}"
            if tag not in f.withheld:
                f.withheld.append(tag)
        return out
