"""What is in the data folder, per symbol: coverage, gaps, synthetic or recorded, OI available.

Why read the parquet directly instead of ``store.load_market``: the loader refuses a file with a
gap (correctly: the features need a continuous series), but a user asking "what data do I have?"
needs to see the gaps, not only the first one as an error. So the timestamps and the few columns
needed are read with pyarrow, and the loader is then run once to say whether the file is usable
as is (its one-line error, when not).

Synthetic or recorded: ``perpbot synth`` marks its files with the parquet metadata key
``perpbot.synthetic`` (how they were generated, see ``store.synthetic_origin``); a file without
that mark is recorded data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perpbot.data.schema import BAR_MS, data_path
from perpbot.data.store import SYNTHETIC_KEY
from perpbot.errors import DataError


@dataclass(frozen=True, slots=True)
class DataStatus:
    symbol: str
    path: Path
    exists: bool
    candles: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    gaps: int = 0  # places where one or more candles are missing
    missing: int = 0  # candles missing inside [first, last]
    largest_gap_bars: int = 0
    source: str = "missing"  # synthetic | recorded | missing
    oi: str = "n/a"  # available | all zero | absent
    funding: str = "n/a"
    problem: str | None = None  # load_market's one-line refusal, if any

    @property
    def coverage(self) -> float | None:
        """Candles present over the candles the [first, last] span should hold."""
        if not self.candles:
            return None
        return self.candles / (self.candles + self.missing)

    @property
    def days(self) -> float:
        if self.first_ms is None or self.last_ms is None:
            return 0.0
        return (self.last_ms - self.first_ms + BAR_MS) / 86_400_000


def _source(meta: dict[bytes, bytes]) -> str:
    return "synthetic" if SYNTHETIC_KEY in meta else "recorded"


def _column_state(table: object, name: str) -> str:
    import pyarrow as pa

    assert isinstance(table, pa.Table)
    if name not in table.column_names:
        return "absent"
    v = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0 or not np.any(finite != 0.0):
        return "all zero"
    return f"available ({np.count_nonzero(finite) / v.size:.0%} non-zero)"


def data_status(data_dir: Path, symbol: str) -> DataStatus:
    """Inspect ``<data_dir>/<symbol>/combined_15m.parquet`` (never raises for a bad file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from perpbot.data.store import load_market

    path = data_path(data_dir, symbol)
    if not path.is_file():
        return DataStatus(symbol, path, exists=False, problem="no data file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DataStatus(
            symbol, path, exists=True, source="unreadable", problem=f"unreadable parquet: {first}"
        )
    meta = dict(table.schema.metadata or {})
    ts_col = "timestamp" if "timestamp" in table.column_names else None
    times = np.zeros(0, dtype=np.int64)
    if ts_col is not None:
        col = table.column(ts_col)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("ms", tz=col.type.tz))
        times = np.sort(
            np.unique(col.to_numpy(zero_copy_only=False).astype("datetime64[ms]").astype(np.int64))
        )
    step = np.diff(times)
    holes = step[step > BAR_MS] // BAR_MS - 1
    problem = None
    try:
        load_market(path)
    except DataError as exc:
        problem = str(exc)
    return DataStatus(
        symbol=symbol,
        path=path,
        exists=True,
        candles=int(times.size),
        first_ms=int(times[0]) if times.size else None,
        last_ms=int(times[-1]) if times.size else None,
        gaps=int(holes.size),
        missing=int(holes.sum()) if holes.size else 0,
        largest_gap_bars=int(holes.max()) if holes.size else 0,
        source=_source(meta),
        oi=_column_state(table, "oi_change"),
        funding=_column_state(table, "funding_rate"),
        problem=problem,
    )
