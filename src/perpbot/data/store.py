"""Market-data files: one validating loader, one atomic writer, the SPEC §7.1 upsert.

Why one loader: every consumer (features, training, backtest, the live warm-up) must see the
same guarantees — a UTC ``timestamp`` index in strictly increasing 15-minute steps without gaps or
duplicates, finite positive prices, consistent OHLC, non-negative volume — and a user with a bad
file must be told *exactly* what is wrong, in one line naming the file (exit status 2), instead of
getting a NaN-riddled model or a pandas traceback three modules later.

Why atomic writes: a fetch interrupted half-way (Ctrl-C, a full disk) must never leave a truncated
parquet behind; the previous file stays intact until ``os.replace`` swaps in the complete new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perpbot.data.market_arrays import (
    CLOSED_THROUGH_KEY as CLOSED_THROUGH_KEY,
)
from perpbot.data.market_arrays import (
    FloatColumn,
    MarketArrays,
    load_market_arrays,
    one_line,
    partial_rows,
    validated_columns,
)
from perpbot.data.schema import (
    ALL_COLUMNS,
    FUNDING_CONVENTION_KEY,
    FUNDING_CONVENTIONS,
    INDEX_NAME,
    MICRO_COLS,
    detect_funding_convention,
)
from perpbot.errors import DataError
from perpbot.fileio import UnwritableFolderError, atomic_write

if TYPE_CHECKING:  # pandas is imported by the functions that build or read frames: the
    import pandas as pd  # backtest loads arrays (``market_arrays``) and needs no pandas at all

# Set on files written by ``perpbot synth`` (how they were made): every command that loads one says
# so, because a synthetic market validates the machinery, never a strategy (issue 11 §1).
SYNTHETIC_KEY = b"perpbot.synthetic"
# ``DataFrame.attrs`` key under which ``load_market`` reports the file's funding convention
# (``data.schema``: the key's value when the file has it, else what the column shows).
FUNDING_CONVENTION_ATTR = "funding_convention"


# --------------------------------------------------------------------------------------------
# Reading (the checks themselves are ``market_arrays.validated_columns``, shared with the
# backtest's pandas-free loader)


def _to_utc_index(values: pd.Index | pd.Series, where: str) -> pd.DatetimeIndex:
    """Accept datetime64 with a time zone (any unit); tz-naive or non-datetime is an error.

    tz-naive timestamps are refused rather than assumed UTC: a file written from local time
    would otherwise be silently shifted by hours, which corrupts funding alignment and labels.
    """
    import pandas as pd

    if not isinstance(values.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(values.dtype):
            raise DataError(f"{where}: timestamp has no time zone (tz-naive); expected UTC")
        raise DataError(f"{where}: timestamp is {values.dtype}, expected a UTC datetime")
    idx = pd.DatetimeIndex(values).tz_convert("UTC")
    if idx.hasnans:
        raise DataError(f"{where}: timestamp has {int(idx.isna().sum())} missing value(s)")
    return idx.as_unit("ms").rename(INDEX_NAME)


def _frame_with_index(table: pa.Table, where: str) -> pd.DataFrame:
    df = table.to_pandas()
    if INDEX_NAME in df.columns:
        if df.index.name == INDEX_NAME:
            raise DataError(f"{where}: both a 'timestamp' index and a 'timestamp' column")
        idx = _to_utc_index(df[INDEX_NAME], where)
        df = df.drop(columns=[INDEX_NAME])
    elif df.index.name == INDEX_NAME:
        idx = _to_utc_index(df.index, where)
    else:
        raise DataError(f"{where}: no 'timestamp' index or column")
    df.index = idx
    return df


def _float_getter(df: pd.DataFrame, where: str) -> FloatColumn:
    import pandas as pd

    def as_float(col: str) -> np.ndarray:
        series = df[col]
        if not (pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)):
            raise DataError(f"{where}: column {col} is not numeric ({series.dtype})")
        return np.ascontiguousarray(series.to_numpy(dtype=np.float64, na_value=np.nan))

    return as_float


def frame_columns(
    table: pa.Table, where: str, closed_ms: int | None, drop_partial_last: bool | None
) -> tuple[np.ndarray, list[str], FloatColumn]:
    """A table through pandas' conversion (layouts the direct pyarrow path leaves to pandas):
    (open times in ms of the kept rows, column names, float getter of the kept rows)."""
    try:
        df = _frame_with_index(table, where)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise DataError(f"{where}: cannot convert to a frame: {one_line(exc)}") from None
    rows = partial_rows(df.index.asi8, closed_ms, drop_partial_last)
    df = df[rows] if not isinstance(rows, slice) else df.iloc[rows]
    return df.index.asi8.astype(np.int64), [str(c) for c in df.columns], _float_getter(df, where)


def _frame(times: np.ndarray, cols: dict[str, np.ndarray]) -> pd.DataFrame:
    import pandas as pd

    index = pd.DatetimeIndex(times.astype("datetime64[ms]")).tz_localize("UTC").rename(INDEX_NAME)
    return pd.DataFrame(cols, index=index, copy=False)


def validate_market(df: pd.DataFrame, where: str = "market frame") -> pd.DataFrame:
    """Normalise and validate an in-memory frame (index already UTC datetime or ``timestamp`` column).

    Returns a new frame: float64 columns in schema order, micro columns filled with 0.0, index
    ``timestamp`` datetime64[ms, UTC]. Raises ``DataError`` prefixed with ``where``.
    """
    if INDEX_NAME in df.columns:
        df = df.set_index(INDEX_NAME)
    if df.index.name != INDEX_NAME:
        df = df.rename_axis(INDEX_NAME)
    df = df.copy()
    df.index = _to_utc_index(df.index, where)
    times = df.index.asi8.astype(np.int64)
    cols = validated_columns(times, [str(c) for c in df.columns], _float_getter(df, where), where)
    return _frame(times, {c: v.copy() for c, v in cols.items()})


def load_market(path: Path, *, drop_partial_last: bool | None = None) -> pd.DataFrame:
    """Load and validate ``data/<sym>/combined_15m.parquet``; raise a one-line ``DataError``.

    The last candle of a recording may not have closed yet (its volume is a fraction of a normal
    bar, see ``../shared/data/README.md``); feeding it to features or labels would train on a
    candle live trading never sees. Hence:

    * ``drop_partial_last=None`` (default, "be honest about what is known"): files written by
      perpbot carry ``perpbot.closed_through_ms`` (open time of the last candle known to be
      closed) and every row after it is dropped; a foreign file without that marker loses its
      final row, because nothing proves it closed. Losing one closed candle costs nothing;
      keeping one partial candle silently skews the most recent features.
    * ``True``: always drop exactly the final row (ignores the marker).
    * ``False``: keep every row (inspection, or a caller that knows all rows are closed).

    ``df.attrs["funding_convention"]`` says on which row a settled funding rate appears
    (``data.schema``): the file's ``perpbot.funding_convention`` metadata, or, for a file written
    without it (the recorded files), what ``detect_funding_convention`` finds in the column.

    The rows, values and errors are those of ``market_arrays.load_market_arrays`` (the same code),
    which the backtest uses without building a frame.
    """
    return market_frame(load_market_arrays(path, drop_partial_last=drop_partial_last))


def market_frame(arrays: MarketArrays) -> pd.DataFrame:
    """The frame ``load_market`` returns for these validated arrays (columns copied when they are
    views: of a parquet buffer, or of an input-cache file)."""
    out = _frame(
        arrays.open_time_ms, {c: v.copy() if not v.flags.owndata else v for c, v in arrays.columns.items()}
    )
    out.attrs[FUNDING_CONVENTION_ATTR] = arrays.funding_convention
    return out


# --------------------------------------------------------------------------------------------
# Writing


def synthetic_origin(path: Path) -> str | None:
    """How a synthetic data file was made (``"seed 7, 120 days"``), ``None`` for recorded data or
    an unreadable file (the loader reports those). Reads the parquet footer only."""
    try:
        meta = pq.read_schema(Path(path)).metadata or {}
    except (pa.ArrowException, OSError, ValueError):
        return None
    raw = meta.get(SYNTHETIC_KEY)
    return None if raw is None else raw.decode("utf-8", "replace")


def save_market(
    df: pd.DataFrame,
    path: Path,
    *,
    closed_through_ms: int | None = None,
    synthetic: str | None = None,
    funding_convention: str | None = None,
) -> Path:
    """Validate, then write atomically (temp file in the same folder + ``os.replace``).

    ``closed_through_ms`` is the open time of the last candle known to be closed; it is stored as
    parquet metadata so ``load_market`` drops exactly the rows after it. ``None`` writes no
    marker: the loader then treats the final row as possibly partial. ``synthetic`` (how the data
    was generated) marks a synthetic market for :func:`synthetic_origin`. Invalid frames are refused
    before anything touches the disk (nothing is written half-way).

    ``funding_convention`` is stored as ``perpbot.funding_convention``; None stores what the
    frame's own column shows (``detect_funding_convention``), so every file perpbot writes says it.
    """
    path = Path(path)
    if funding_convention is not None and funding_convention not in FUNDING_CONVENTIONS:
        raise ValueError(f"unknown funding convention {funding_convention!r}")
    frame = validate_market(df, str(path))
    table = pa.Table.from_pandas(frame, preserve_index=True)
    meta = dict(table.schema.metadata or {})
    if closed_through_ms is not None:
        meta[CLOSED_THROUGH_KEY] = str(int(closed_through_ms)).encode()
    if synthetic is not None:
        meta[SYNTHETIC_KEY] = synthetic.encode("utf-8")
    if funding_convention is None:
        funding_convention = detect_funding_convention(
            frame.index.asi8, frame["funding_rate"].to_numpy(dtype=np.float64)
        )
    meta[FUNDING_CONVENTION_KEY] = funding_convention.encode()
    table = table.replace_schema_metadata(meta)
    try:
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    except UnwritableFolderError as exc:
        raise DataError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    return path


def data_file_sha256(path: Path) -> str:
    """Hex SHA-256 of a data file, recorded in model metadata to tie a model to its data."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Upsert (SPEC §7.1)


def _utc_frame(df: pd.DataFrame) -> pd.DataFrame:
    """SPEC: 'localise both indexes to UTC' — naive means UTC here (frames built in memory)."""
    import pandas as pd

    if INDEX_NAME in df.columns:
        df = df.set_index(INDEX_NAME)
    idx = pd.DatetimeIndex(df.index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    out = df.copy()
    out.index = idx.as_unit("ms").rename(INDEX_NAME)
    for col in MICRO_COLS:
        out[col] = out[col].astype("float64") if col in out.columns else 0.0
    return out


def _ordered(columns: Sequence[str]) -> list[str]:
    known = [c for c in ALL_COLUMNS if c in columns]
    return known + [c for c in columns if c not in ALL_COLUMNS]


def upsert_market(existing: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Merge a fresh download into the stored frame (SPEC §7.1, with the later de-duplication).

    On timestamps present in both, candles come from ``new`` (the exchange's latest word), but
    ``oi_change`` / ``funding_rate`` are replaced only where the stored value is exactly 0.0 (or
    NaN): the exchange forgets open interest after ~30 days, so a later download reports 0 where
    an earlier one recorded the real value, and that value must survive. New timestamps are
    appended, NaN micro values become 0, duplicate timestamps keep the last, the index ascends.
    """
    import pandas as pd

    fresh = _utc_frame(new)
    fresh = fresh[~fresh.index.duplicated(keep="last")]
    if existing is None or existing.empty:
        merged = fresh
    else:
        stored = _utc_frame(existing)
        stored = stored[~stored.index.duplicated(keep="last")]
        overlap = stored.index.intersection(fresh.index)
        fresh = fresh.copy()
        for col in MICRO_COLS:
            old = stored.loc[overlap, col]
            keep_old = old.notna() & (old != 0.0)
            fresh.loc[old.index[keep_old], col] = old[keep_old]
        merged = pd.concat([stored.drop(index=overlap), fresh])
    merged = merged[~merged.index.duplicated(keep="last")].sort_index()
    for col in MICRO_COLS:
        merged[col] = merged[col].fillna(0.0)
    return merged[_ordered(list(merged.columns))]
