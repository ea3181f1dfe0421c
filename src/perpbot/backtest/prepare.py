"""Backtest preparation: each symbol's window as the arrays the loop reads, and one timeline.

Why its own module: what a run keeps per symbol decides its memory (issue 13: 100 symbols over a
year). A symbol is loaded (``market_arrays``: parquet → numpy, no DataFrame), its features are
computed once on the whole file, and only then is the window cut out; the file's arrays and the
feature arrays are dropped before the next symbol is loaded, so at most one symbol's full history
is in memory at a time.

What stays per symbol (:class:`SymbolSeries`): the window's open times and OHLC + funding (the
matching engine reads them in place), the warm-up mask and the rule signal's side per row (the
loop and the skip-ahead agenda read them on every step), and the values of the bot's context.
Those values are needed only where a context is built: with the skip-ahead only on warm candles
carrying a signal (~1 % of candles), so ``contexts="signals"`` keeps them for those rows alone;
``"all"`` keeps every row (stepping through every candle hands HOLD candles to the bots too).
Either way they are the float64 values the feature builder computed: nothing is narrowed, so no
price or threshold comparison can change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from perpbot.backtest.sorted_union import union_sorted
from perpbot.data.market_arrays import MarketArrays
from perpbot.data.schema import BAR_MS, data_path
from perpbot.engine.context import CandleContext
from perpbot.errors import DataError
from perpbot.strategy.signal import side_from_code

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from perpbot.config import AppConfig, SignalParams

ContextRows = Literal["all", "signals"]


@dataclass(slots=True)
class SymbolSeries:
    """One symbol's window, as plain arrays and Python lists for the hot loop."""

    symbol: str
    open_time_ms: np.ndarray  # int64, window rows
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    funding: np.ndarray | None
    ready: np.ndarray  # bool: every non-optional feature finite (signals allowed)
    # Per row: the rule signal's side (None for HOLD), a list for the hot loop's ``is None`` test.
    side: list[Any]
    # The context values (module docstring): row ``context_rows[j]`` of the window is entry ``j``
    # of each array below; ``context_rows`` is None when every row is kept (entry = row).
    features: np.ndarray  # (rows kept, 26) float64, read-only
    long_score: np.ndarray  # int64
    short_score: np.ndarray  # int64
    close_l: np.ndarray  # float64
    atr_l: np.ndarray
    rsi_l: np.ndarray
    macd_l: np.ndarray
    adx_l: np.ndarray
    vol_surge_l: np.ndarray  # bool
    context_rows: dict[int, int] | None = None

    @property
    def n(self) -> int:
        return int(self.open_time_ms.size)

    def context(self, i: int) -> CandleContext:
        """The bot's context for window row ``i`` (same values as ``features.context_from_row``)."""
        if self.context_rows is None:
            j = i
        else:
            try:
                j = self.context_rows[i]
            except KeyError:
                raise LookupError(f"{self.symbol}: row {i} has no signal; its context was not kept") from None
        return CandleContext(
            self.symbol,
            self.open_time_ms.item(i),
            self.close_l.item(j),
            self.atr_l.item(j),
            self.side[i],
            self.long_score.item(j),
            self.short_score.item(j),
            self.rsi_l.item(j),
            self.macd_l.item(j),
            self.adx_l.item(j),
            self.vol_surge_l.item(j),
            self.features[j],
        )


def market_source(symbol: str, data_dir: Path, markets: Mapping[str, pd.DataFrame] | None) -> MarketArrays:
    """One symbol's validated market: the given frame, else ``<data_dir>/<sym>/combined_15m.parquet``."""
    if markets is not None:
        return MarketArrays.from_frame(markets[symbol], symbol)
    from perpbot.data.market_arrays import load_market_arrays

    return load_market_arrays(data_path(data_dir, symbol))


def cached_inputs(
    symbol: str, data_dir: Path, params: SignalParams
) -> tuple[MarketArrays, dict[str, np.ndarray]]:
    """``<data_dir>/<sym>/combined_15m.parquet`` as validated arrays and its feature arrays for
    ``params``: what ``load_market_arrays`` and ``feature_arrays`` compute, served from the input
    cache when a valid entry exists (``backtest.input_cache``; no pyarrow, no indicator), else
    computed and stored."""
    from perpbot.backtest import input_cache
    from perpbot.backtest.heap import release_free_heap
    from perpbot.data.market_arrays import load_market_arrays
    from perpbot.ml.features import feature_arrays

    path = data_path(data_dir, symbol)
    root = input_cache.cache_root()
    source = None if root is None else input_cache.describe(path)
    key = params.as_dict()
    entry = None if root is None or source is None else input_cache.read(root, source, key)
    if entry is not None and entry.features is not None:
        return entry.market, entry.features
    if entry is not None:
        market = entry.market
    else:
        market = load_market_arrays(path)
        # The decode's pages and buffers, freed under the columns just kept: back to the OS
        # before the features are computed (``backtest.heap``; ~3 MiB of a symbol-year's peak).
        release_free_heap()
    features = feature_arrays(market, params)
    if root is not None and source is not None:
        if entry is not None:
            synthetic = entry.synthetic
        else:
            from perpbot.data.store import synthetic_origin

            synthetic = synthetic_origin(path)
        input_cache.write(root, source, market, synthetic, key, features)
    return market, features


def prime_inputs(symbols: Sequence[str], data_dir: Path, params_for: Callable[[str], SignalParams]) -> None:
    """Store the input cache entries of data files just written (``perpbot fetch``, ``synth``).

    Why (issue 13): with a cold entry a backtest decodes the file and computes its features before
    its first candle, ~0.3 s CPU more than from a warm entry, and every data refresh made every
    file cold. The command that wrote the files pays it once instead, next to a download or a
    generation that takes longer anyway, so the next backtest on them starts warm (with the
    parameters configured now; other parameters recompute the features only). Nothing when the
    cache is off; a file the cache cannot serve is left to the backtest, which reports it."""
    from perpbot.backtest import input_cache

    if input_cache.cache_root() is None:
        return
    for sym in symbols:
        with contextlib.suppress(DataError):
            cached_inputs(sym, data_dir, params_for(sym))


def window_slice(times: np.ndarray, start_ms: int | None, end_ms: int | None) -> slice:
    """Rows of sorted open ``times`` inside the window (``start`` inclusive, ``end`` exclusive)."""
    lo = 0 if start_ms is None else int(np.searchsorted(times, start_ms, side="left"))
    hi = times.size if end_ms is None else int(np.searchsorted(times, end_ms, side="left"))
    return slice(lo, hi)


def prepare_series(
    symbol: str,
    market: pd.DataFrame | MarketArrays,
    app_config: AppConfig,
    start_ms: int | None,
    end_ms: int | None,
    precomputed: Mapping[str, np.ndarray] | None = None,
    *,
    contexts: ContextRows = "all",
) -> SymbolSeries | None:
    """Features once on the whole market, then the window slice; None when the window is empty.

    ``precomputed``: the whole market's ``feature_arrays`` for these parameters, already computed.
    ``contexts``: which rows keep their context values (module docstring)."""
    from perpbot.ml.features import BASE_FEATURES, FEATURE_COLS, feature_arrays

    arrays_in = market if isinstance(market, MarketArrays) else MarketArrays.from_frame(market, symbol)
    times = arrays_in.open_time_ms
    w = window_slice(times, start_ms, end_ms)
    if w.stop <= w.start:
        return None
    params = app_config.params_for(symbol)
    arrays = precomputed if precomputed is not None else feature_arrays(arrays_in, params)
    atr = np.ascontiguousarray(arrays["atr"][w], dtype=np.float64)
    ready = np.isfinite(atr)
    for c in BASE_FEATURES:
        ready &= np.isfinite(arrays[c][w])
    signal = np.asarray(arrays["signal"][w]).astype(np.int64)
    keep: np.ndarray | slice = slice(None)
    rows: dict[int, int] | None = None
    if contexts == "signals":
        keep = np.flatnonzero(ready & (signal != 0))
        rows = {int(r): j for j, r in enumerate(keep.tolist())}

    def kept(name: str, dtype: Any = np.float64) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(arrays[name][w])[keep], dtype=dtype)

    # Filled column by column: a list of the columns next to their stacked copy doubled the
    # matrix while it was built (issue 13; ``contexts="all"`` keeps every row).
    size = w.stop - w.start if isinstance(keep, slice) else keep.size
    feats = np.empty((size, len(FEATURE_COLS)), dtype=np.float64)
    for j, c in enumerate(FEATURE_COLS):
        feats[:, j] = np.asarray(arrays[c][w])[keep]
    feats.flags.writeable = False  # contexts hand out row views: the bot must not alter the frame

    def col(name: str) -> np.ndarray | None:
        # A copy of the window: a view would keep the whole file's buffer alive for the run.
        values = arrays_in.column(name)
        return None if values is None else np.array(values[w], dtype=np.float64)

    sides = {code: side_from_code(code) for code in (-1, 0, 1)}
    return SymbolSeries(
        symbol=symbol,
        open_time_ms=np.array(times[w], dtype=np.int64),
        open=_required(col("open")),
        high=_required(col("high")),
        low=_required(col("low")),
        close=_required(col("close")),
        funding=col("funding_rate"),
        ready=ready,
        side=list(map(sides.__getitem__, signal.tolist())),
        features=feats,
        long_score=kept("long_score", np.int64),
        short_score=kept("short_score", np.int64),
        close_l=kept("close"),
        atr_l=atr[keep] if rows is not None else atr,
        rsi_l=kept("rsi"),
        macd_l=kept("macd_hist"),
        adx_l=kept("adx_raw"),
        vol_surge_l=kept("vol_surge", bool),
        context_rows=rows,
    )


def _required(values: np.ndarray | None) -> np.ndarray:
    if values is None:  # feature_arrays already refused a market without OHLCV
        raise DataError("market lacks an OHLC column")
    return values


@dataclass(frozen=True, slots=True)
class Timeline:
    """The union of open times and, per step, which symbols have a candle (and which row)."""

    open_time_ms: np.ndarray  # int64, strictly increasing
    steps: Sequence[tuple[tuple[int, int], ...]]  # per step: ((symbol index, row), ...) in symbol order
    rows: np.ndarray  # (steps, symbols) int32: each symbol's row at each step, -1 without a candle

    @property
    def close_time_ms(self) -> np.ndarray:
        return self.open_time_ms + BAR_MS


class _Steps(Sequence[tuple[tuple[int, int], ...]]):
    """The timeline's steps, built on demand from one (steps × symbols) row matrix (-1: no candle).

    Why not a list of tuples: for 100 symbols over a year that list holds 3.5 M small tuples
    (~0.4 GiB), and with the skip-ahead most steps are never looked at (issue 13, scale)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: np.ndarray) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return int(self._rows.shape[0])

    def _step(self, k: int) -> tuple[tuple[int, int], ...]:
        return tuple((si, r) for si, r in enumerate(self._rows[k].tolist()) if r >= 0)

    @overload
    def __getitem__(self, k: int) -> tuple[tuple[int, int], ...]: ...
    @overload
    def __getitem__(self, k: slice) -> list[tuple[tuple[int, int], ...]]: ...
    def __getitem__(self, k: int | slice) -> tuple[tuple[int, int], ...] | list[tuple[tuple[int, int], ...]]:
        if isinstance(k, slice):
            return [self._step(i) for i in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(k)
        return self._step(k)


def build_timeline(series: Sequence[SymbolSeries]) -> Timeline:
    """Align the symbols on one timeline of open times (union; no step for a missing candle)."""
    times = union_sorted([s.open_time_ms for s in series])
    rows = np.full((times.size, len(series)), -1, dtype=np.int32)
    for k, s in enumerate(series):
        rows[np.searchsorted(times, s.open_time_ms), k] = np.arange(s.n, dtype=np.int32)
    return Timeline(open_time_ms=times, steps=_Steps(rows), rows=rows)


def forward_fill(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``values`` (stamped with sorted ``times``) at each of ``at``: the last value at or before
    it, NaN before the first."""
    pos = np.searchsorted(times, at, side="right") - 1
    return np.where(pos >= 0, values[np.maximum(pos, 0)], np.nan)


def aligned_closes(series: Sequence[SymbolSeries], timeline: Timeline) -> dict[str, np.ndarray]:
    """Each symbol's close on the timeline, forward-filled (NaN before its first candle)."""
    return {s.symbol: forward_fill(s.open_time_ms, s.close, timeline.open_time_ms) for s in series}
