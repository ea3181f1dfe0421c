"""Binance history rows → the stored candle frame: closed klines, funding and open-interest change
per candle, the correlation join. Pure functions of their inputs, so the loopback-server tests and
the real-data tests check the very code that shaped the files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from perpbot.data.schema import BAR_MS, BTC_COLS, ETH_COLS, INDEX_NAME, OHLCV

OI_MERGE_TOLERANCE = pd.Timedelta(minutes=8)


def ms_index(ms: np.ndarray | Sequence[int]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(ms, dtype=np.int64), unit="ms", utc=True)).as_unit("ms")


def klines_frame(rows: list[list[Any]], now_ms: int) -> pd.DataFrame:
    """Binance kline arrays → OHLCV frame of closed candles (close time ≤ server time)."""
    closed = [r for r in rows if int(r[6]) <= now_ms]
    if not closed:
        return pd.DataFrame(columns=list(OHLCV), index=ms_index([]).rename(INDEX_NAME), dtype="float64")
    arr = np.array([[float(x) for x in r[1:6]] for r in closed], dtype=np.float64)
    index = ms_index([int(r[0]) for r in closed]).rename(INDEX_NAME)
    frame = pd.DataFrame(arr, index=index, columns=list(OHLCV))
    return frame[~frame.index.duplicated(keep="last")].sort_index()


def funding_on_candles(index: pd.DatetimeIndex, events: pd.Series) -> np.ndarray:
    """The latest rate settled by each candle's close, forward-filled; before the first → 0.

    A rate settled at 08:00:00.003 belongs to the 08:00 candle: it is known when that candle
    closes, which is when features are computed.
    """
    if events.empty:
        return np.zeros(len(index))
    known_by = index.asi8 + BAR_MS - 1
    times = events.index.to_numpy(dtype=np.int64)
    pos = np.searchsorted(times, known_by, side="right") - 1
    rates = events.to_numpy(dtype=np.float64)
    out = np.where(pos >= 0, rates[np.clip(pos, 0, None)], 0.0)
    return np.nan_to_num(out, nan=0.0)


def oi_change_on_candles(index: pd.DatetimeIndex, oi: pd.Series) -> np.ndarray:
    """Relative change of ``sumOpenInterest`` (first 0, 0 after a non-positive value), merged onto
    candle open times by nearest timestamp within 8 minutes; candles without a match get 0."""
    if oi.empty:
        return np.zeros(len(index))
    values = oi.to_numpy(dtype=np.float64)
    prev = np.concatenate(([np.nan], values[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(prev > 0, values / prev - 1.0, 0.0)
    change = np.nan_to_num(change, nan=0.0, posinf=0.0, neginf=0.0)
    right = pd.DataFrame({"t": ms_index(oi.index.to_numpy(dtype=np.int64)), "oi_change": change})
    left = pd.DataFrame({"t": index})
    merged = pd.merge_asof(left, right, on="t", direction="nearest", tolerance=OI_MERGE_TOLERANCE)
    return merged["oi_change"].fillna(0.0).to_numpy(dtype=np.float64)


def combine(primary: pd.DataFrame, btc: pd.DataFrame, eth: pd.DataFrame) -> pd.DataFrame:
    """Primary inner-joined with the correlation candles under their *role* suffixes."""
    btc_roles = btc.set_axis(list(BTC_COLS), axis=1)
    eth_roles = eth.set_axis(list(ETH_COLS), axis=1)
    return primary.join(btc_roles, how="inner").join(eth_roles, how="inner")
