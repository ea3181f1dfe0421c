"""Market data as plain arrays: the one validation of a market, and a loader without pandas.

Why arrays: a backtest reads a market's open times and a handful of float columns, nothing else.
Going through a DataFrame cost the backtest ~80 MiB of pandas alone plus a copy of every column
(issue 13, memory), and the 100-symbol run held every symbol's frame at once. Here a parquet file
goes from pyarrow straight to numpy (float64 columns without nulls are not even copied).

Why the validation lives here: ``store.load_market`` (the DataFrame loader every other consumer
uses) and :func:`load_market_arrays` must give the same guarantees and the same one-line errors,
so both run :func:`validated_columns` on arrays. A file whose layout the direct pyarrow path does
not cover (no tz-aware ``timestamp`` column, a non-numeric or null-holding integer column, two
``timestamp`` fields, sub-millisecond times) goes through pandas' own conversion first, exactly as
``load_market`` always did, so its errors stay word for word.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perpbot.data.schema import (
    BAR_MS,
    BTC_COLS,
    ETH_COLS,
    FUNDING_CONVENTION_KEY,
    FUNDING_CONVENTIONS,
    INDEX_NAME,
    MICRO_COLS,
    OHLCV,
    detect_funding_convention,
)
from perpbot.errors import DataError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

# Parquet key-value metadata written by ``store.save_market``: open time (ms) of the last candle
# that was known to be closed when the file was written.
CLOSED_THROUGH_KEY = b"perpbot.closed_through_ms"
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (("primary", OHLCV), ("btc", BTC_COLS), ("eth", ETH_COLS))
_KNOWN = frozenset((*OHLCV, *BTC_COLS, *ETH_COLS, *MICRO_COLS))
_MS_PER_UNIT = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}  # (×, ÷)


@dataclass(frozen=True, slots=True, eq=False)
class MarketArrays:
    """One validated market: open times (int64 ms, UTC, strictly increasing 15-minute steps) and
    float64 columns in schema order (micro columns present, NaN filled with 0.0)."""

    open_time_ms: np.ndarray
    columns: dict[str, np.ndarray]
    funding_convention: str | None = None

    def __len__(self) -> int:
        return int(self.open_time_ms.size)

    def column(self, name: str) -> np.ndarray | None:
        return self.columns.get(name)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, where: str = "market") -> MarketArrays:
        """An in-memory market frame (``DatetimeIndex`` of open times) as arrays, values as is.

        The frame is trusted as given (tests, the walk-forward's already-loaded markets); files
        are validated by the loaders."""
        import pandas as pd

        if not isinstance(frame.index, pd.DatetimeIndex):
            raise DataError(f"{where}: market frame needs a DatetimeIndex of candle open times")
        cols = {
            str(c): np.ascontiguousarray(frame[c].to_numpy(dtype=np.float64, na_value=np.nan))
            for c in frame.columns
            if c in _KNOWN
        }
        times = frame.index.as_unit("ms").asi8.astype(np.int64)
        return cls(times, cols, frame.attrs.get("funding_convention"))


# --------------------------------------------------------------------------------------------
# Validation (shared with ``store.load_market`` / ``store.validate_market``)


def fmt_ts(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(ms))).strftime("%Y-%m-%d %H:%M UTC")


def _first_bad(mask: np.ndarray, times: np.ndarray) -> str:
    return f"{int(mask.sum())} row(s), first {fmt_ts(times[int(np.flatnonzero(mask)[0])])}"


def check_times(ms: np.ndarray, where: str) -> None:
    """Non-empty, no duplicate, strictly increasing, on the 15-minute grid, no gap."""
    if ms.size == 0:
        raise DataError(f"{where}: no rows")
    order = np.argsort(ms, kind="stable")
    same = ms[order[1:]] == ms[order[:-1]]
    if same.any():
        # Stable sort: within equal times the first occurrence comes first, so the others are
        # exactly the repeats; the earliest repeat is the one to name.
        first = int(order[1:][same].min())
        raise DataError(f"{where}: {int(same.sum())} duplicate timestamp(s), first {fmt_ts(ms[first])}")
    step = np.diff(ms)
    back = np.flatnonzero(step < 0)
    if back.size:
        i = int(back[0])
        raise DataError(
            f"{where}: timestamps not strictly increasing: {fmt_ts(ms[i + 1])} follows {fmt_ts(ms[i])}"
        )
    odd = np.flatnonzero(step % BAR_MS != 0)
    if odd.size:
        i = int(odd[0])
        raise DataError(
            f"{where}: not a 15-minute step: {fmt_ts(ms[i])} -> {fmt_ts(ms[i + 1])} "
            f"({step[i] / 60_000:g} min)"
        )
    gaps = np.flatnonzero(step > BAR_MS)
    if gaps.size:
        i = int(gaps[0])
        missing = int((step[gaps] // BAR_MS - 1).sum())
        raise DataError(
            f"{where}: {gaps.size} gap(s) in the 15-minute sequence ({missing} candle(s) missing), "
            f"first after {fmt_ts(ms[i])} (next candle {fmt_ts(ms[i + 1])})"
        )


def _check_finite(cols: dict[str, np.ndarray], times: np.ndarray, where: str) -> None:
    """Name *every* column holding NaN/inf in one line (issue 11 §1: fixing a file column by
    column, one rerun each, is what a user should not have to do)."""
    bad_cols = []
    for col, values in cols.items():
        bad = ~np.isfinite(values)
        if bad.any():
            bad_cols.append(f"{col}: {_first_bad(bad, times)}")
    if len(bad_cols) == 1:
        raise DataError(f"{where}: non-finite {bad_cols[0]}")
    if bad_cols:
        raise DataError(f"{where}: non-finite values in {len(bad_cols)} columns: {'; '.join(bad_cols)}")


def check_values(cols: dict[str, np.ndarray], times: np.ndarray, where: str) -> None:
    """Finite values; positive prices; high/low bracket open and close; non-negative volume."""
    _check_finite(cols, times, where)
    for _, names in GROUPS:
        if names[0] not in cols:
            continue
        o, h, lo, c, v = (cols[n] for n in names)
        for col, arr in zip(names[:4], (o, h, lo, c), strict=True):
            bad = arr <= 0
            if bad.any():
                raise DataError(f"{where}: non-positive {col}: {_first_bad(bad, times)}")
        bad = h < np.maximum(o, c)
        if bad.any():
            raise DataError(f"{where}: {names[1]} < max({names[0]}, {names[3]}): {_first_bad(bad, times)}")
        bad = lo > np.minimum(o, c)
        if bad.any():
            raise DataError(f"{where}: {names[2]} > min({names[0]}, {names[3]}): {_first_bad(bad, times)}")
        bad = v < 0
        if bad.any():
            raise DataError(f"{where}: negative {names[4]}: {_first_bad(bad, times)}")


FloatColumn = Callable[[str], np.ndarray]
"""``as_float(name)``: the named column as float64 (one-line ``DataError`` when not numeric)."""


def validated_columns(
    times: np.ndarray, names: Sequence[str], as_float: FloatColumn, where: str
) -> dict[str, np.ndarray]:
    """Required OHLCV, optional role groups (all five or none), optional micro columns (absent or
    NaN → 0.0, which is what the live loop feeds when its fetch fails, SPEC §2.3); then every
    check of :func:`check_times` and :func:`check_values`. Returns the columns in schema order."""
    present = set(names)
    missing = [c for c in OHLCV if c not in present]
    if missing:
        raise DataError(f"{where}: missing required column(s): {', '.join(missing)}")
    keep: list[str] = list(OHLCV)
    for role, cols in GROUPS[1:]:
        have = [c for c in cols if c in present]
        if have and len(have) != len(cols):
            absent = [c for c in cols if c not in present]
            raise DataError(
                f"{where}: incomplete {role}-role columns (have {', '.join(have)}; "
                f"missing {', '.join(absent)}): all five or none"
            )
        keep.extend(have)
    out = {col: as_float(col) for col in keep}
    for col in MICRO_COLS:
        if col in present:
            values = as_float(col)
            out[col] = np.where(np.isnan(values), 0.0, values) if np.isnan(values).any() else values
        else:
            out[col] = np.zeros(times.size, dtype=np.float64)
    check_times(times, where)
    check_values(out, times, where)
    return out


# --------------------------------------------------------------------------------------------
# Reading


def one_line(text: object) -> str:
    """Arrow/pandas messages can span lines; the error contract is one line."""
    first = str(text).strip().splitlines()
    return first[0][:200] if first else type(text).__name__


def read_table(path: Path) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise DataError(f"{path}: file not found (run `perpbot fetch` or `perpbot synth` first)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with pq.ParquetFile(path) as handle:  # not read_table: its dataset layer imports pandas
            # One thread: a decode spread over Arrow's thread pool leaves each worker's allocator
            # heap behind, measured 14-50 MiB more RSS over a 10-symbol year (issue 13, with the
            # system pool as with mimalloc), for no time saved on files of a few MiB.
            return _columnwise(handle)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable parquet (truncated or not a parquet file): {one_line(exc)}"
        ) from None


def _columnwise(handle: pq.ParquetFile) -> pa.Table:
    """The file's table read one column at a time: the same table as ``handle.read()``.

    Why: a whole-file read holds every column's compressed and decompressed pages next to the
    decoded columns; one column at a time holds one column's. Measured on a symbol-year (18
    columns, 4.9 MiB decoded; issue 13): the read's RSS peak 18 MiB → 11 MiB above the table,
    and no slower. A schema naming a column twice is read whole (a name would not say which)."""
    import pyarrow as pa

    schema = handle.schema_arrow
    names = schema.names
    if len(set(names)) != len(names):
        return handle.read(use_threads=False)
    columns = [handle.read(columns=[name], use_threads=False).column(0) for name in names]
    return pa.Table.from_arrays(columns, schema=schema)


def closed_through(table: pa.Table, path: Path) -> int | None:
    raw = (table.schema.metadata or {}).get(CLOSED_THROUGH_KEY)
    if raw is None:
        return None
    try:
        return int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"{path}: bad {CLOSED_THROUGH_KEY.decode()} metadata {raw!r}") from None


def funding_convention(table: pa.Table, path: Path) -> str | None:
    raw = (table.schema.metadata or {}).get(FUNDING_CONVENTION_KEY)
    if raw is None:
        return None
    value = raw.decode(errors="replace")
    if value not in FUNDING_CONVENTIONS:
        allowed = ", ".join(FUNDING_CONVENTIONS)
        raise DataError(
            f"{path}: unknown {FUNDING_CONVENTION_KEY.decode()} {value!r} (expected one of: {allowed})"
        )
    return value


def partial_rows(times: np.ndarray, closed_ms: int | None, drop_partial_last: bool | None) -> Any:
    """The rows kept by ``store.load_market``'s ``drop_partial_last`` rule (a slice or a mask)."""
    if drop_partial_last is False:
        return slice(None)
    if drop_partial_last is None and closed_ms is not None:
        return times <= closed_ms
    return slice(0, max(times.size - 1, 0))


def prefix_slice(rows: Any) -> Any:
    """``rows`` (a slice or a mask) as a slice when the mask keeps a prefix, which is what a file
    whose closed-through time is its last candle (or one before) gives.

    Why: a slice of a one-chunk float64 column is a view of the Arrow buffer, a mask a copy. The
    copies doubled a file's columns while it was read and, living in the C heap while the table
    lives in Arrow's pool, added the table's size again to a symbol's memory peak (issue 13)."""
    if isinstance(rows, slice):
        return rows
    kept = int(np.count_nonzero(rows))
    return slice(0, kept) if bool(rows[:kept].all()) else rows


def to_numpy(column: pa.ChunkedArray, dtype: np.dtype[Any] | None = None) -> np.ndarray:
    """A null-free integer or floating column (float nulls become NaN) as numpy, read straight
    from its data buffer (no copy for one chunk). Not pyarrow's ``to_numpy``: it imports pandas.
    ``dtype``: how to read the buffer when it is not the column type's own (a timestamp's int64
    storage: read as it is, because a ``cast`` would import ``pyarrow.compute``, ~0.07 s CPU)."""
    import pyarrow as pa

    if column.null_count:
        column = column.fill_null(pa.scalar(float("nan"), column.type))
    # ``combine_chunks`` copies even a single chunk (measured, pyarrow 26): the file's decoded
    # columns and their copies were alive together while a symbol was loaded (issue 13).
    arr = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    dtype = np.dtype(arr.type.to_pandas_dtype()) if dtype is None else dtype
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


def direct_arrays(table: pa.Table) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(open times in ms, known columns as pyarrow arrays) when the plain pyarrow conversion gives
    exactly what pandas' would; None when the layout needs pandas (module docstring)."""
    import pyarrow as pa

    names = table.column_names
    if names.count(INDEX_NAME) != 1:
        return None
    ts = table.column(INDEX_NAME)
    kind = ts.type
    if not (pa.types.is_timestamp(kind) and kind.tz is not None) or ts.null_count:
        return None
    cols: dict[str, Any] = {}
    for name in names:
        if name not in _KNOWN:
            continue
        col = table.column(name)
        if names.count(name) != 1 or not (
            pa.types.is_floating(col.type) or (pa.types.is_integer(col.type) and col.null_count == 0)
        ):
            return None
        cols[name] = col
    raw = to_numpy(ts, np.dtype(np.int64))  # a timestamp is its int64 count of ``kind.unit``
    mul, div = _MS_PER_UNIT[kind.unit]
    if div > 1 and bool((raw % div).any()):
        return None
    times = raw * mul if mul > 1 else raw // div if div > 1 else raw
    return np.ascontiguousarray(times, dtype=np.int64), cols


def load_market_arrays(path: Path, *, drop_partial_last: bool | None = None) -> MarketArrays:
    """``data/<sym>/combined_15m.parquet`` as validated arrays: what ``store.load_market`` returns
    (same rows, values, checks and one-line errors, the same ``drop_partial_last`` rule and funding
    convention), without building a DataFrame."""
    path = Path(path)
    where = str(path)
    table = read_table(path)
    closed_ms = closed_through(table, path)
    convention = funding_convention(table, path)
    if table.num_rows == 0:
        raise DataError(f"{where}: no rows")
    direct = direct_arrays(table)
    if direct is None:
        from perpbot.data.store import frame_columns

        times, names, as_float = frame_columns(table, where, closed_ms, drop_partial_last)
    else:
        times, raw = direct
        rows = prefix_slice(partial_rows(times, closed_ms, drop_partial_last))
        times = times[rows]
        names = list(raw)

        def as_float(name: str) -> np.ndarray:
            values = to_numpy(raw[name])
            return np.ascontiguousarray(values[rows], dtype=np.float64)

    if times.size == 0:
        raise DataError(f"{where}: no closed candles (only a possibly partial last row)")
    cols = validated_columns(times, names, as_float, where)
    if convention is None:
        convention = detect_funding_convention(times, cols["funding_rate"])
    return MarketArrays(times, cols, convention)
