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
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from perpbot.config import AppConfig
from perpbot.data.market_arrays import MarketArrays
from perpbot.data.schema import BAR_MS, OHLCV
from perpbot.domain.types import Side
from perpbot.engine.context import CandleContext
from perpbot.exchange.binance.market_stream import Candle
from perpbot.ml.features import (
    BASE_FEATURES,
    FRAME_COLS,
    LIVE_WINDOW_BARS,
    OPTIONAL_FEATURES,
    FrameIndex,
    MarketPart,
    SignalStage,
    context_from_row,
    market_features,
    signal_stage,
    with_micro_features,
)
from perpbot.strategy.signal import side_from_code

if TYPE_CHECKING:
    import pandas as pd

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
    to (``candle_job``). Fewer than two rows → nothing."""
    out: list[tuple[int, float]] = []
    for (_, prev), (ts, value) in pairwise(rows):
        out.append((int(ts) - bar_ms, oi_change(prev, value)))
    return out


class _Ring:
    """The last ``size`` rows of one symbol (open time, OHLCV, OI change, funding rate) in one
    contiguous float64 array. Why not a deque of candles: the features read the window as
    arrays at every close, and converting a thousand candles each time cost more than the
    features themselves. Appends are amortised O(1) (the live rows slide to the front when the
    buffer is full); ``view`` is free."""

    COLS = 8  # open time, open, high, low, close, volume, oi_change, funding_rate

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self._buf = np.zeros((2 * self.size, self.COLS))
        self._lo = self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo

    def append(self, c: Candle) -> None:
        if self._hi == len(self._buf):
            keep = self.size - 1
            self._buf[:keep] = self._buf[self._hi - keep : self._hi]
            self._lo, self._hi = 0, keep
        self._buf[self._hi] = (c.open_ms, c.open, c.high, c.low, c.close, c.volume, 0.0, 0.0)
        self._hi += 1
        if self._hi - self._lo > self.size:
            self._lo += 1

    def view(self) -> np.ndarray:
        return self._buf[self._lo : self._hi]

    def last_open(self) -> int | None:
        return int(self._buf[self._hi - 1, 0]) if self._hi > self._lo else None

    def row_of(self, open_ms: int) -> int | None:
        """Index (in ``view``) of the candle opened at ``open_ms``; None when not held."""
        times = self.view()[:, 0]
        i = int(np.searchsorted(times, open_ms))
        return i if i < len(times) and times[i] == open_ms else None


class MarketWindow:
    """The last ``size`` closed candles of each symbol, with waiters for alignment."""

    def __init__(self, app: AppConfig, *, size: int = LIVE_WINDOW_BARS, align_wait_s: float = ALIGN_WAIT_S):
        self.app = app
        self.size = size
        self.align_wait_s = align_wait_s
        self.btc, self.eth = app.correlation.as_tuple()
        self._rings: dict[str, _Ring] = {}
        # Aligners waiting for BTC/ETH of an open time (a future each, woken by ``add``): one
        # loop turn per waiter, where a Condition hands its lock from waiter to waiter.
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        self.align_timeouts = 0  # decisions made without a correlation candle of the same open time

    def _ring(self, symbol: str) -> _Ring:
        ring = self._rings.get(symbol)
        if ring is None:
            ring = self._rings[symbol] = _Ring(self.size)
        return ring

    # ------------------------------------------------------------------ input

    def preload(self, symbol: str, candles: list[Candle]) -> None:
        ring = self._rings[symbol] = _Ring(self.size)
        for c in candles[-self.size :]:
            ring.append(c)

    async def add(self, c: Candle) -> None:
        """Store one closed candle (in open-time order per symbol) and wake any aligner."""
        ring = self._ring(c.symbol)
        last = ring.last_open()
        if last is not None and c.open_ms <= last:
            return
        ring.append(c)
        if self._waiting and c.symbol in (self.btc, self.eth):
            still = []
            for open_ms, fut in self._waiting:
                if fut.done():
                    continue
                if self.is_aligned(open_ms):
                    fut.set_result(None)
                else:
                    still.append((open_ms, fut))
            self._waiting = still

    def set_micro(self, symbol: str, open_ms: int, micro: Micro) -> None:
        """OI change and funding rate of a held candle (a candle the window does not hold: no-op)."""
        ring = self._rings.get(symbol)
        i = ring.row_of(open_ms) if ring is not None else None
        if ring is not None and i is not None:
            ring.view()[i, 6:8] = (micro.oi_change, micro.funding_rate)

    def count(self, symbol: str) -> int:
        """Candles held for ``symbol``."""
        ring = self._rings.get(symbol)
        return len(ring) if ring is not None else 0

    def seed_oi(self, symbol: str, changes: list[tuple[int, float]]) -> int:
        """Put seeded OI changes on the preloaded candles they belong to; returns how many landed
        (a change for a candle the window does not hold is dropped)."""
        return self.seed_history(symbol, changes, [])[0]

    def held_opens(self, symbol: str) -> list[int]:
        """Open times of the candles held for ``symbol``, oldest first."""
        ring = self._rings.get(symbol)
        return [int(t) for t in ring.view()[:, 0]] if ring is not None else []

    def seed_history(
        self, symbol: str, oi_changes: list[tuple[int, float]], funding: list[tuple[int, float]]
    ) -> tuple[int, int]:
        """Put seeded OI changes and funding rates (``runtime.micro_seed``) on the preloaded
        candles they belong to, in open-time order; returns how many of each landed (a value for
        a candle the window does not hold is dropped)."""
        oi, rates = dict(oi_changes), dict(funding)
        landed = [0, 0]
        for open_ms in self.held_opens(symbol):
            if open_ms not in oi and open_ms not in rates:
                continue
            landed[0] += open_ms in oi
            landed[1] += open_ms in rates
            self.set_micro(symbol, open_ms, Micro(oi.get(open_ms, 0.0), rates.get(open_ms, 0.0)))
        return landed[0], landed[1]

    def last_open(self, symbol: str) -> int | None:
        ring = self._rings.get(symbol)
        return ring.last_open() if ring is not None else None

    def have(self, symbol: str, open_ms: int) -> bool:
        last = self.last_open(symbol)
        return last is not None and last >= open_ms

    def is_aligned(self, open_ms: int) -> bool:
        """BTC and ETH both have their candle at ``open_ms`` (``align`` would not wait)."""
        return self.have(self.btc, open_ms) and self.have(self.eth, open_ms)

    async def align(self, open_ms: int) -> bool:
        """Wait (bounded) until BTC and ETH have a candle at ``open_ms``; False on timeout."""
        if self.is_aligned(open_ms):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((open_ms, fut))
        try:
            await asyncio.wait_for(fut, self.align_wait_s)
            return True
        except TimeoutError:
            self.align_timeouts += 1
            return False

    # ------------------------------------------------------------------ output

    def arrays(self, symbol: str, upto_open_ms: int | None = None) -> MarketArrays:
        """The primary's window as the feature code reads it: OHLCV, the BTC/ETH closes
        forward-filled by open time, OI/funding (zero unless set). Copies: the window moves on
        while a decision is made."""
        ring = self._rings.get(symbol)
        prim = ring.view() if ring is not None else np.zeros((0, _Ring.COLS))
        if upto_open_ms is not None and len(prim) and prim[-1, 0] > upto_open_ms:
            prim = prim[prim[:, 0] <= upto_open_ms]
        prim = prim[-LIVE_WINDOW_BARS:]  # what ``live_feature_row`` reads (a larger window: the tail)
        times = prim[:, 0].astype(np.int64)  # epoch ms are exact in float64 (< 2**53)
        cols: dict[str, np.ndarray] = {name: prim[:, 1 + i].copy() for i, name in enumerate(OHLCV)}
        for role, name in ((self.btc, "close_btc"), (self.eth, "close_eth")):
            cols[name] = self._closes(role, times)  # the features read these two only
        cols["oi_change"] = prim[:, 6].copy()
        cols["funding_rate"] = prim[:, 7].copy()
        return MarketArrays(times, cols)

    def _closes(self, role: str, times: np.ndarray) -> np.ndarray:
        """``role``'s close at each open time: the last candle opened at or before it (a gap is
        forward-filled, as the batch features do); NaN before its first candle."""
        ring = self._rings.get(role)
        aux = ring.view() if ring is not None else np.zeros((0, _Ring.COLS))
        m = len(times)
        if 0 < m <= len(aux):
            # The usual case, every candle of the window held by ``role`` too: its closes are a
            # slice, the same numbers as the search below finds one by one (~70 µs a candle less).
            end = int(np.searchsorted(aux[:, 0], times[-1], side="right"))
            if end >= m and np.array_equal(aux[end - m : end, 0], times):
                return aux[end - m : end, 4].copy()
        pos = np.searchsorted(aux[:, 0], times, side="right") - 1
        ok = pos >= 0
        out = np.full(len(times), np.nan)
        out[ok] = aux[pos[ok], 4]
        return out

    def frame(self, symbol: str, upto_open_ms: int | None = None) -> pd.DataFrame:
        """:meth:`arrays` as a DataFrame indexed by open time (diagnostics and tests)."""
        import pandas as pd

        a = self.arrays(symbol, upto_open_ms)
        index = pd.DatetimeIndex(pd.to_datetime(a.open_time_ms, unit="ms", utc=True), name="timestamp")
        return pd.DataFrame(a.columns, index=index)

    def prepare(self, symbol: str, upto_open_ms: int | None = None) -> Prepared | None:
        """The first step of a context: indicators and rule signal of the primary's last candle
        (``Prepared.signal``), cheap, so that the runtime knows early whether a decision is coming.
        None when the window is empty."""
        market = self.arrays(symbol, upto_open_ms)
        if len(market) == 0:
            return None
        stage = signal_stage(market, self.app.params_for(symbol), last_only=True)
        open_ms = int(market.open_time_ms[-1])
        return Prepared(symbol, open_ms, market, stage, aligned=self.is_aligned(open_ms))

    def features(self, prep: Prepared) -> None:
        """The second step: every feature the candles decide (the z-scores); run while the
        close's OI and funding reads are in flight. The BTC/ETH closes are taken again here:
        the first step (the primary's candles only) may run before they arrived; when both were
        already there, the closes of the first step are final (``add`` only appends newer candles)
        and are not searched again."""
        if prep.part is None:
            if not prep.aligned:
                times = prep.market.open_time_ms
                for role, name in ((self.btc, "close_btc"), (self.eth, "close_eth")):
                    prep.market.columns[name] = self._closes(role, times)
            params = self.app.params_for(prep.symbol)
            prep.part = market_features(prep.market, params, last_only=True, stage=prep.stage)

    def finish(
        self, prep: Prepared, micro: Micro | None = None, *, with_micro: bool = True
    ) -> CandleContext | None:
        """The bot's context from :meth:`prepare` and the close's OI/funding (``micro``; None: as
        stored in the window). None before the features are warm (the backtest's ``ready`` rule:
        every non-optional feature and the ATR finite: the OI/funding features are optional).

        ``with_micro=False``: the four OI/funding features are NaN, not computed, for a decision
        that reads none of them (no ML filter) and so does not wait for the close's answers."""
        self.features(prep)
        assert prep.part is not None
        if not with_micro:
            data = {**prep.part.data, **dict.fromkeys(OPTIONAL_FEATURES, _NAN)}
        else:
            if micro is not None:
                prep.market.columns["oi_change"][-1] = micro.oi_change
                prep.market.columns["funding_rate"][-1] = micro.funding_rate
            data = with_micro_features(prep.part, prep.market.column)
        row = np.array([data[name][-1] for name in FRAME_COLS], dtype=np.float64)
        if not np.isfinite(row[_BASE]).all() or not np.isfinite(row[_INDEX.atr]):
            return None
        return context_from_row(prep.symbol, prep.open_ms, row, _INDEX)

    def context(self, symbol: str, upto_open_ms: int | None = None) -> CandleContext | None:
        """The bot's context for the primary's last closed candle (OI/funding as stored)."""
        prep = self.prepare(symbol, upto_open_ms)
        return None if prep is None else self.finish(prep)


@dataclass(slots=True, eq=False)
class Prepared:
    """A context in the making (``MarketWindow.prepare`` → ``features`` → ``finish``)."""

    symbol: str
    open_ms: int
    market: MarketArrays
    stage: SignalStage
    aligned: bool = False  # BTC and ETH had their candle of ``open_ms`` when it was prepared
    part: MarketPart | None = None

    @property
    def signal(self) -> Side | None:
        return side_from_code(self.stage.signal)


_INDEX = FrameIndex.from_columns(FRAME_COLS)
_NAN = np.array([np.nan])
_BASE = np.array([FRAME_COLS.index(c) for c in BASE_FEATURES])
