"""Closed candles of every streamed symbol, aligned by open time, turned into the bot's context.

Why a rolling window and not a growing frame: ``live_feature_row`` reads the last
``LIVE_WINDOW_BARS`` candles only (its parity with the batch features is pinned at 1e-9), so each
symbol keeps exactly that many candles; memory per symbol is bounded and constant.

Correlation alignment (issue 10 §1, the documented choice): the primary's candle T is combined
with BTC's and ETH's candle of the *same open time*. Binance closes every 15-min candle of every
symbol at the same instant, but the messages arrive in any order, usually within a second. When
the primary's candle T is handled before BTC/ETH's T has arrived, the runtime waits for them at
most ``align_wait_s`` (default 5 s). After that it goes on with what it has: the missing rows are
forward-filled from the last known correlation candle (the same forward fill the batch features
apply to gaps), and the late candle is stored when it comes, so the *next* decision sees it.
Waiting longer would delay every entry behind an outage of a symbol the bot does not trade;
not waiting at all would turn ordinary arrival jitter into stale features.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from perpbot.config import AppConfig
from perpbot.data.market_arrays import MarketArrays
from perpbot.data.schema import BAR_MS, BTC_COLS, ETH_COLS, OHLCV
from perpbot.engine.context import CandleContext
from perpbot.exchange.binance.market_stream import Candle
from perpbot.ml.features import (
    BASE_FEATURES,
    FRAME_COLS,
    LIVE_WINDOW_BARS,
    FrameIndex,
    context_from_row,
    feature_arrays,
)

_BASE_POS = np.array([FRAME_COLS.index(name) for name in BASE_FEATURES])
_ATR_POS = FRAME_COLS.index("atr")

ALIGN_WAIT_S = 5.0


@dataclass(slots=True)
class Micro:
    """Open-interest change and funding rate for the primary's next feature row (SPEC §2.3: zero
    when the venue does not give them, the way the recorded files store "not recorded")."""

    oi_change: float = 0.0
    funding_rate: float = 0.0


def oi_change(prev: float, value: float) -> float:
    """SPEC §2.3's relative OI change; 0 when the previous value is not positive (or not finite)."""
    change = (value - prev) / prev if prev > 0 else 0.0
    return change if np.isfinite(change) else 0.0


def oi_seed(rows: list[tuple[int, float]], bar_ms: int = BAR_MS) -> list[tuple[int, float]]:
    """SPEC §2.3 start-up seeding: the successive relative changes of ``sumOpenInterest`` (0 where
    the previous value is not positive), each placed on the candle that closed at the snapshot's
    time (``open = timestamp − bar``), the candle a live fetch at that close would have given it
    to (``Runtime._micro``). Fewer than two rows → nothing."""
    out: list[tuple[int, float]] = []
    for (_, prev), (ts, value) in pairwise(rows):
        out.append((int(ts) - bar_ms, oi_change(prev, value)))
    return out


class MarketWindow:
    """The last ``size`` closed candles of each symbol, with waiters for alignment."""

    def __init__(self, app: AppConfig, *, size: int = LIVE_WINDOW_BARS, align_wait_s: float = ALIGN_WAIT_S):
        self.app = app
        self.size = size
        self.align_wait_s = align_wait_s
        self.btc, self.eth = app.correlation.as_tuple()
        self._candles: dict[str, deque[Candle]] = {}
        self._micro: dict[str, dict[int, Micro]] = {}
        self._arrived = asyncio.Condition()
        self.align_timeouts = 0  # decisions made without a correlation candle of the same open time
        self._frame_index: FrameIndex | None = None
        # Each symbol's window as one (n, 6) array (open time, OHLCV), built once per new candle:
        # BTC's and ETH's serve every traded symbol's context of the same candle.
        self._tables: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ input

    def preload(self, symbol: str, candles: list[Candle]) -> None:
        self._candles[symbol] = deque(candles[-self.size :], maxlen=self.size)
        self._tables.pop(symbol, None)

    async def add(self, c: Candle) -> None:
        """Store one closed candle (in open-time order per symbol) and wake any aligner."""
        dq = self._candles.setdefault(c.symbol, deque(maxlen=self.size))
        if dq and c.open_ms <= dq[-1].open_ms:
            return
        dq.append(c)
        self._tables.pop(c.symbol, None)
        async with self._arrived:
            self._arrived.notify_all()

    def set_micro(self, symbol: str, open_ms: int, micro: Micro) -> None:
        per = self._micro.setdefault(symbol, {})
        per[open_ms] = micro
        while len(per) > self.size:
            per.pop(next(iter(per)))

    def count(self, symbol: str) -> int:
        """Candles held for ``symbol``."""
        return len(self._candles.get(symbol, ()))

    def seed_oi(self, symbol: str, changes: list[tuple[int, float]]) -> int:
        """Put seeded OI changes on the preloaded candles they belong to; returns how many landed
        (a change for a candle the window does not hold is dropped)."""
        held = {c.open_ms for c in self._candles.get(symbol, ())}
        landed = 0
        for open_ms, change in changes:
            if open_ms in held:
                self.set_micro(symbol, open_ms, Micro(oi_change=change))
                landed += 1
        return landed

    def last_open(self, symbol: str) -> int | None:
        dq = self._candles.get(symbol)
        return dq[-1].open_ms if dq else None

    def have(self, symbol: str, open_ms: int) -> bool:
        last = self.last_open(symbol)
        return last is not None and last >= open_ms

    async def align(self, open_ms: int) -> bool:
        """Wait (bounded) until BTC and ETH have a candle at ``open_ms``; False on timeout."""

        def ready() -> bool:
            return self.have(self.btc, open_ms) and self.have(self.eth, open_ms)

        if ready():
            return True
        try:
            async with self._arrived:
                await asyncio.wait_for(self._arrived.wait_for(ready), self.align_wait_s)
            return True
        except TimeoutError:
            self.align_timeouts += 1
            return False

    # ------------------------------------------------------------------ output

    def _table(self, symbol: str) -> np.ndarray:
        t = self._tables.get(symbol)
        if t is None:
            dq = self._candles.get(symbol, ())
            rows = [(c.open_ms, c.open, c.high, c.low, c.close, c.volume) for c in dq]
            t = np.array(rows, dtype=np.float64).reshape(-1, 1 + len(OHLCV))
            self._tables[symbol] = t
        return t

    def arrays(self, symbol: str, upto_open_ms: int | None = None) -> MarketArrays:
        """The primary's window in the data schema (correlation columns forward-filled by open
        time; OI/funding zero unless set), as arrays: what the features are computed on."""
        prim = self._table(symbol)
        if upto_open_ms is not None:
            prim = prim[prim[:, 0] <= upto_open_ms]
        times = prim[:, 0].astype(np.int64)  # epoch ms are exact in float64 (< 2**53)
        cols: dict[str, np.ndarray] = {name: prim[:, 1 + i].copy() for i, name in enumerate(OHLCV)}
        for role, names in ((self.btc, BTC_COLS), (self.eth, ETH_COLS)):
            aux = self._table(role)
            pos = np.searchsorted(aux[:, 0], times, side="right") - 1  # last correlation candle <= T
            ok = pos >= 0
            for i, name in enumerate(names):
                out = np.full(len(prim), np.nan)
                out[ok] = aux[pos[ok], 1 + i]
                cols[name] = out
        micro = self._micro.get(symbol, {})
        zero = Micro()
        got = [micro.get(t, zero) for t in times.tolist()]
        cols["oi_change"] = np.array([m.oi_change for m in got], dtype=np.float64)
        cols["funding_rate"] = np.array([m.funding_rate for m in got], dtype=np.float64)
        return MarketArrays(times, cols)

    def frame(self, symbol: str, upto_open_ms: int | None = None) -> pd.DataFrame:
        """``arrays`` as a DataFrame (index: open times), the input of ``live_feature_row``."""
        arr = self.arrays(symbol, upto_open_ms)
        index = pd.DatetimeIndex(pd.to_datetime(arr.open_time_ms, unit="ms", utc=True), name="timestamp")
        return pd.DataFrame(arr.columns, index=index)

    def context(self, symbol: str, upto_open_ms: int | None = None) -> CandleContext | None:
        """The bot's context for the primary's last closed candle; None before the features are
        warm (the backtest's ``ready`` rule: every non-optional feature and the ATR finite).

        The features are ``live_feature_row``'s, computed the same way (``feature_arrays`` on the
        last ``LIVE_WINDOW_BARS`` candles, last element of each array) straight from the arrays:
        building a DataFrame and a Series per candle and symbol cost more than the features."""
        arr = self.arrays(symbol, upto_open_ms)
        if len(arr) == 0:
            return None
        if len(arr) > LIVE_WINDOW_BARS:
            cut = slice(len(arr) - LIVE_WINDOW_BARS, None)
            arr = MarketArrays(arr.open_time_ms[cut], {k: v[cut] for k, v in arr.columns.items()})
        data = feature_arrays(arr, self.app.params_for(symbol))
        row = np.array([data[name][-1] for name in FRAME_COLS], dtype=np.float64)
        if not np.isfinite(row[_BASE_POS]).all() or not np.isfinite(row[_ATR_POS]):
            return None
        if self._frame_index is None:
            self._frame_index = FrameIndex.from_columns(list(FRAME_COLS))
        return context_from_row(symbol, int(arr.open_time_ms[-1]), row, self._frame_index)
