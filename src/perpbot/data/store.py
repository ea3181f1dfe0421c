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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from perpbot.data.schema import (
    ALL_COLUMNS,
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
from perpbot.fileio import UnwritableFolderError, atomic_write

# Parquet key-value metadata written by ``save_market``: open time (ms) of the last candle that
# was known to be closed when the file was written.
CLOSED_THROUGH_KEY = b"perpbot.closed_through_ms"
# Set on files written by ``perpbot synth`` (how they were made): every command that loads one says
# so, because a synthetic market validates the machinery, never a strategy (issue 11 §1).
SYNTHETIC_KEY = b"perpbot.synthetic"
# ``DataFrame.attrs`` key under which ``load_market`` reports the file's funding convention
# (``data.schema``: the key's value when the file has it, else what the column shows).
FUNDING_CONVENTION_ATTR = "funding_convention"

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (("primary", OHLCV), ("btc", BTC_COLS), ("eth", ETH_COLS))


# --------------------------------------------------------------------------------------------
# Reading


def _one_line(text: object) -> str:
    """Arrow/pandas messages can span lines; the error contract is one line."""
    first = str(text).strip().splitlines()
    return first[0][:200] if first else type(text).__name__


def _read_table(path: Path) -> pa.Table:
    if not path.exists():
        raise DataError(f"{path}: file not found (run `perpbot fetch` or `perpbot synth` first)")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = _one_line(exc)
        raise DataError(f"{path}: unreadable parquet (truncated or not a parquet file): {reason}") from None


def _closed_through(table: pa.Table, path: Path) -> int | None:
    meta = table.schema.metadata or {}
    raw = meta.get(CLOSED_THROUGH_KEY)
    if raw is None:
        return None
    try:
        return int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"{path}: bad {CLOSED_THROUGH_KEY.decode()} metadata {raw!r}") from None


def _funding_convention(table: pa.Table, path: Path) -> str | None:
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


def _to_utc_index(values: pd.Index | pd.Series, where: str) -> pd.DatetimeIndex:
    """Accept datetime64 with a time zone (any unit); tz-naive or non-datetime is an error.

    tz-naive timestamps are refused rather than assumed UTC: a file written from local time
    would otherwise be silently shifted by hours, which corrupts funding alignment and labels.
    """
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


def _fmt_ts(ts: pd.Timestamp | int) -> str:
    if not isinstance(ts, pd.Timestamp):
        ts = pd.Timestamp(int(ts), unit="ms", tz="UTC")
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def _select_columns(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Required OHLCV, optional role groups (all five or none), optional micro columns → 0.0."""
    missing = [c for c in OHLCV if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing required column(s): {', '.join(missing)}")
    keep: list[str] = list(OHLCV)
    for role, cols in _GROUPS[1:]:
        present = [c for c in cols if c in df.columns]
        if present and len(present) != len(cols):
            absent = [c for c in cols if c not in df.columns]
            raise DataError(
                f"{where}: incomplete {role}-role columns (have {', '.join(present)}; "
                f"missing {', '.join(absent)}): all five or none"
            )
        keep.extend(present)
    out = pd.DataFrame(index=df.index)
    for col in keep:
        out[col] = _as_float(df[col], col, where)
    for col in MICRO_COLS:
        # Optional inputs of the OI/funding features: absent or NaN means "not known" → 0.0,
        # which is what the live loop feeds when its fetch fails (SPEC §2.3).
        values = _as_float(df[col], col, where) if col in df.columns else pd.Series(0.0, index=df.index)
        out[col] = values.fillna(0.0)
    return out


def _as_float(series: pd.Series, col: str, where: str) -> pd.Series:
    if not (pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)):
        raise DataError(f"{where}: column {col} is not numeric ({series.dtype})")
    return series.astype("float64")


def _check_index(idx: pd.DatetimeIndex, where: str) -> None:
    if len(idx) == 0:
        raise DataError(f"{where}: no rows")
    dup = idx.duplicated()
    if dup.any():
        raise DataError(f"{where}: {int(dup.sum())} duplicate timestamp(s), first {_fmt_ts(idx[dup][0])}")
    ms = idx.asi8
    step = np.diff(ms)
    back = np.flatnonzero(step < 0)
    if back.size:
        i = int(back[0])
        raise DataError(
            f"{where}: timestamps not strictly increasing: {_fmt_ts(idx[i + 1])} follows {_fmt_ts(idx[i])}"
        )
    odd = np.flatnonzero(step % BAR_MS != 0)
    if odd.size:
        i = int(odd[0])
        raise DataError(
            f"{where}: not a 15-minute step: {_fmt_ts(idx[i])} -> {_fmt_ts(idx[i + 1])} "
            f"({step[i] / 60_000:g} min)"
        )
    gaps = np.flatnonzero(step > BAR_MS)
    if gaps.size:
        i = int(gaps[0])
        missing = int((step[gaps] // BAR_MS - 1).sum())
        raise DataError(
            f"{where}: {gaps.size} gap(s) in the 15-minute sequence ({missing} candle(s) missing), "
            f"first after {_fmt_ts(idx[i])} (next candle {_fmt_ts(idx[i + 1])})"
        )


def _first_bad(mask: np.ndarray, idx: pd.DatetimeIndex) -> str:
    return f"{int(mask.sum())} row(s), first {_fmt_ts(idx[int(np.flatnonzero(mask)[0])])}"


def _check_finite(df: pd.DataFrame, where: str) -> None:
    """Name *every* column holding NaN/inf in one line (issue 11 §1: fixing a file column by
    column, one rerun each, is what a user should not have to do)."""
    bad_cols = []
    for col in df.columns:
        bad = ~np.isfinite(df[col].to_numpy())
        if bad.any():
            bad_cols.append(f"{col}: {_first_bad(bad, df.index)}")
    if len(bad_cols) == 1:
        raise DataError(f"{where}: non-finite {bad_cols[0]}")
    if bad_cols:
        raise DataError(f"{where}: non-finite values in {len(bad_cols)} columns: {'; '.join(bad_cols)}")


def _check_values(df: pd.DataFrame, where: str) -> None:
    _check_finite(df, where)
    idx = df.index
    for _, cols in _GROUPS:
        if cols[0] not in df.columns:
            continue
        o, h, lo, c, v = (df[col].to_numpy() for col in cols)
        for col, arr in zip(cols[:4], (o, h, lo, c), strict=True):
            bad = arr <= 0
            if bad.any():
                raise DataError(f"{where}: non-positive {col}: {_first_bad(bad, idx)}")
        bad = h < np.maximum(o, c)
        if bad.any():
            raise DataError(f"{where}: {cols[1]} < max({cols[0]}, {cols[3]}): {_first_bad(bad, idx)}")
        bad = lo > np.minimum(o, c)
        if bad.any():
            raise DataError(f"{where}: {cols[2]} > min({cols[0]}, {cols[3]}): {_first_bad(bad, idx)}")
        bad = v < 0
        if bad.any():
            raise DataError(f"{where}: negative {cols[4]}: {_first_bad(bad, idx)}")


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
    out = _select_columns(df, where)
    _check_index(out.index, where)
    _check_values(out, where)
    return out


def _drop_partial(
    df: pd.DataFrame, closed_through_ms: int | None, drop_partial_last: bool | None
) -> pd.DataFrame:
    if drop_partial_last is False:
        return df
    if drop_partial_last is None and closed_through_ms is not None:
        return df[df.index.asi8 <= closed_through_ms]
    return df.iloc[:-1]


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
    """
    path = Path(path)
    where = str(path)
    table = _read_table(path)
    closed_through = _closed_through(table, path)
    convention = _funding_convention(table, path)
    if table.num_rows == 0:
        raise DataError(f"{where}: no rows")
    try:
        df = _frame_with_index(table, where)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise DataError(f"{where}: cannot convert to a frame: {_one_line(exc)}") from None
    df = _drop_partial(df, closed_through, drop_partial_last)
    if df.empty:
        raise DataError(f"{where}: no closed candles (only a possibly partial last row)")
    out = validate_market(df, where)
    if convention is None:
        convention = detect_funding_convention(out.index.asi8, out["funding_rate"].to_numpy(dtype=np.float64))
    out.attrs[FUNDING_CONVENTION_ATTR] = convention
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
