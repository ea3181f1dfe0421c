"""The candles the simulator replays: recorded files or the demo's synthetic market.

Why the simulator keeps its own arrays beside the engine's: klines carry volume, and the REST
history (``klines``, ``fundingRate``, ``openInterestHist``) must reach back before the replay
start, while the engine only holds the bars it will process. Both are cut from the same frame, so
prices agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from perpbot.data.schema import BAR_MS, data_path, detect_funding_convention, settled_funding
from perpbot.errors import ConfigError, DataError

DAY_MS = 86_400_000
HISTORY_DAYS = 7  # synthetic market: days of candles served as history before the replay starts
OI_BASE_NOTIONAL = 50_000_000.0  # USDT; the files hold only relative OI changes (see open_interest)


@dataclass(slots=True)
class Series:
    """One symbol's candles (full history, replay window included), float64/int64 arrays."""

    symbol: str
    open_time: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    funding: np.ndarray  # the recorded column: the rate known at each candle, forward-filled
    oi_level: np.ndarray
    # Per row, the rate settled at its open if it is a settlement (``data.schema.settled_funding``:
    # the row itself, or the next one where the recording shows a new rate one row late): what
    # the engine charges, so what the ``fundingRate`` history says was settled.
    settled: np.ndarray

    def index_at(self, open_ms: int) -> int:
        """Index of the bar opening at ``open_ms``, or -1."""
        i = int(np.searchsorted(self.open_time, open_ms))
        return i if i < len(self.open_time) and int(self.open_time[i]) == open_ms else -1

    def last_closed(self, now_ms: int) -> int:
        """Index of the last bar closed at ``now_ms`` (close time = open + 15 min), or -1."""
        return int(np.searchsorted(self.open_time, now_ms - BAR_MS, side="right")) - 1


def _series(symbol: str, frame: pd.DataFrame) -> Series:
    times = pd.DatetimeIndex(frame.index).as_unit("ms").asi8
    oi = frame["oi_change"].to_numpy(np.float64) if "oi_change" in frame else np.zeros(len(frame))
    funding = frame["funding_rate"].to_numpy(np.float64) if "funding_rate" in frame else np.zeros(len(frame))
    funding = np.nan_to_num(funding)
    convention = detect_funding_convention(times, funding)
    settled = settled_funding(times, funding, convention)
    close = frame["close"].to_numpy(np.float64)
    # Open interest in contracts: a fixed notional at the first close, moved by the recorded changes.
    level = OI_BASE_NOTIONAL / close[0] * np.cumprod(1.0 + np.nan_to_num(oi))
    return Series(
        symbol,
        np.ascontiguousarray(times, dtype=np.int64),
        frame["open"].to_numpy(np.float64),
        frame["high"].to_numpy(np.float64),
        frame["low"].to_numpy(np.float64),
        close,
        frame["volume"].to_numpy(np.float64),
        funding,
        level,
        settled,
    )


def parse_time(text: str) -> int:
    """``--from``: an ISO date/time (UTC) or epoch milliseconds."""
    try:
        if text.isdigit():
            return int(text)
        ts = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--from={text!r}: not a date (use YYYY-MM-DD or epoch ms): {exc}") from None
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1_000_000)


@dataclass(slots=True)
class Market:
    """Every replayed symbol's series plus the replay window ``[start_ms, end_ms)`` (open times)."""

    series: dict[str, Series]
    start_ms: int
    end_ms: int

    @property
    def symbols(self) -> list[str]:
        return list(self.series)


def load_market_data(symbols: list[str], data_dir: Path | None, from_ms: int | None, days: int) -> Market:
    """Recorded files from ``data_dir`` or, without it, the synthetic market of ``perpbot demo``."""
    if days < 1:
        raise ConfigError(f"--days={days}: need at least one day")
    if data_dir is None:
        from perpbot.data.synth import synth_market

        start = pd.Timestamp(from_ms, unit="ms", tz="UTC") if from_ms is not None else None
        first = (start - pd.Timedelta(days=HISTORY_DAYS)) if start is not None else pd.Timestamp("2025-01-01")
        series = {
            s: _series(
                s, synth_market(days=days + HISTORY_DAYS, seed=7, symbol=s, start=first.strftime("%Y-%m-%d"))
            )
            for s in symbols
        }
        t0 = max(int(x.open_time[0]) for x in series.values())
        start_ms = t0 + HISTORY_DAYS * DAY_MS
        return Market(series, start_ms, start_ms + days * DAY_MS)
    from perpbot.data.store import load_market

    series = {}
    for s in symbols:
        path = data_path(data_dir, s)
        if not path.is_file():
            raise DataError(f"{path}: no recorded market for {s} (run 'perpbot fetch' or drop --data-dir)")
        series[s] = _series(s, load_market(path))
    first = max(int(x.open_time[0]) for x in series.values())
    last = min(int(x.open_time[-1]) for x in series.values())
    start_ms = first + BAR_MS if from_ms is None else from_ms
    start_ms = start_ms - start_ms % BAR_MS
    if not (first < start_ms <= last):
        raise ConfigError(
            f"--from={pd.Timestamp(start_ms, unit='ms', tz='UTC')}: outside the recorded data "
            f"({pd.Timestamp(first, unit='ms', tz='UTC')} .. {pd.Timestamp(last, unit='ms', tz='UTC')})"
        )
    return Market(series, start_ms, min(start_ms + days * DAY_MS, last + BAR_MS))
