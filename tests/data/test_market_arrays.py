"""load_market_arrays: the backtest's pandas-free loader gives what load_market gives.

Same rows, same float64 values, same funding convention, same one-line errors, whichever way a
file was written (perpbot's writer, a foreign pandas file, a timestamp column, nanoseconds, another
time zone, missing optional columns, integer or float32 columns) and whether it takes the direct
pyarrow path or pandas' conversion.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perpbot.data.market_arrays import (
    MarketArrays,
    check_times,
    direct_arrays,
    load_market_arrays,
    prefix_slice,
    read_table,
    to_numpy,
)
from perpbot.data.schema import BAR_MS, BTC_COLS, ETH_COLS, MICRO_COLS, OHLCV
from perpbot.data.store import FUNDING_CONVENTION_ATTR, load_market, save_market
from perpbot.errors import DataError
from tests.support.data import foreign


def assert_same(path: Path, **kw: object) -> MarketArrays:
    frame = load_market(path, **kw)  # type: ignore[arg-type]
    arrays = load_market_arrays(path, **kw)  # type: ignore[arg-type]
    np.testing.assert_array_equal(arrays.open_time_ms, frame.index.asi8)
    assert arrays.open_time_ms.dtype == np.int64
    assert list(arrays.columns) == list(frame.columns)
    for name, values in arrays.columns.items():
        assert values.dtype == np.float64, name
        np.testing.assert_array_equal(values, frame[name].to_numpy(), err_msg=name)
    assert arrays.funding_convention == frame.attrs[FUNDING_CONVENTION_ATTR]
    return arrays


def test_files_written_by_perpbot_take_the_direct_path(tmp_path: Path, small: pd.DataFrame) -> None:
    path = save_market(small, tmp_path / "m.parquet", closed_through_ms=int(small.index.asi8[-3]))
    assert direct_arrays(read_table(path)) is not None
    for kw in ({}, {"drop_partial_last": True}, {"drop_partial_last": False}):
        assert_same(path, **kw)
    assert len(load_market_arrays(path)) == len(small) - 2


def test_closed_rows_are_read_in_place_not_copied(tmp_path: Path, small: pd.DataFrame) -> None:
    """Issue 13: the closed-through rule keeps a prefix of the file; its float64 columns are then
    views of the decoded file, not a second copy of it (and the values are load_market's)."""
    path = save_market(small, tmp_path / "m.parquet", closed_through_ms=int(small.index.asi8[-3]))
    arrays = assert_same(path)
    assert not arrays.columns["close"].flags.owndata
    assert prefix_slice(np.array([True, True, False])) == slice(0, 2)
    assert prefix_slice(slice(0, 4)) == slice(0, 4)
    scattered = np.array([True, False, True])
    assert prefix_slice(scattered) is scattered


def test_a_file_read_column_by_column_is_the_whole_file(tmp_path: Path, small: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = save_market(small, tmp_path / "m.parquet", closed_through_ms=int(small.index.asi8[-1]))
    twice = tmp_path / "twice.parquet"  # a name given twice cannot be read by name: read whole
    pq.write_table(pa.table([pa.array([1.0]), pa.array([2.0])], names=["close", "close"]), twice)
    for file in (path, foreign(small, tmp_path / "f.parquet"), twice):
        with pq.ParquetFile(file) as handle:
            whole = handle.read()
        assert read_table(file).equals(whole, check_metadata=True), file.name


def test_a_one_chunk_column_is_read_in_place() -> None:
    """Issue 13: ``combine_chunks`` copies even one chunk; a loaded file's columns are its decoded
    buffers, not a copy made while the file is still alive."""
    import pyarrow as pa

    chunk = pa.array([1.0, 2.0, 3.0, 4.0]).slice(1)
    values = to_numpy(pa.chunked_array([chunk]))
    assert values.__array_interface__["data"][0] == chunk.buffers()[1].address + 8
    np.testing.assert_array_equal(values, [2.0, 3.0, 4.0])
    two = to_numpy(pa.chunked_array([chunk, pa.array([5.0])]))  # several chunks: one array
    np.testing.assert_array_equal(two, [2.0, 3.0, 4.0, 5.0])


@pytest.mark.parametrize(
    "layout",
    ["foreign", "column-ns", "tokyo", "bare", "holes-float32", "integers", "sub-ms"],
)
def test_every_layout_equals_load_market(tmp_path: Path, small: pd.DataFrame, layout: str) -> None:
    df = small
    if layout == "column-ns":
        df = small.reset_index()
        df["timestamp"] = df["timestamp"].dt.as_unit("ns")
    elif layout == "tokyo":
        df = small.tz_convert("Asia/Tokyo")
    elif layout == "bare":
        df = small[list(OHLCV)]
    elif layout == "holes-float32":
        df = small.copy()
        df.iloc[5, df.columns.get_loc("oi_change")] = np.nan
        df = df[[*OHLCV, *ETH_COLS, *MICRO_COLS, *BTC_COLS]].astype({"volume": "float32"})
    elif layout == "integers":
        df = small.assign(volume=np.arange(len(small), dtype=np.int64))
    elif layout == "sub-ms":  # not whole milliseconds: left to pandas' conversion, as before
        df = small.copy()
        df.index = (df.index.as_unit("ns") + pd.Timedelta(1, "ns")).rename("timestamp")
    path = foreign(df, tmp_path / "m.parquet")
    direct = direct_arrays(read_table(path))
    assert (direct is None) == (layout == "sub-ms")
    for kw in ({}, {"drop_partial_last": False}):
        assert_same(path, **kw)


def bad_files(tmp_path: Path, small: pd.DataFrame) -> list[Path]:
    bad = small.copy()
    bad.iloc[[17, 90], bad.columns.get_loc("high_btc")] = np.inf
    neg = small.copy()
    neg.iloc[[3], neg.columns.get_loc("volume")] = -1.0
    cases = {
        "required": small.drop(columns=["close", "volume"]),
        "btc-group": small.drop(columns=["close_btc"]),
        "non-numeric": small.assign(volume="x"),
        "tz-naive": small.tz_localize(None),
        "no-timestamp": small.rename_axis("time"),
        "dup": pd.concat([small.iloc[:50], small.iloc[40:45], small.iloc[50:]]),
        "swap": small.iloc[[*range(30), 31, 30, *range(32, 200)]],
        "gap": small.drop(index=small.index[[10, 11, 12, 50]]),
        "inf": bad,
        "negative": neg,
        "rows0": small.iloc[:0],
        "rows1": small.iloc[:1],
    }
    return [foreign(df, tmp_path / f"{name}.parquet") for name, df in cases.items()]


def test_errors_are_word_for_word_those_of_load_market(tmp_path: Path, small: pd.DataFrame) -> None:
    for path in bad_files(tmp_path, small):
        with pytest.raises(DataError) as want:
            load_market(path)
        with pytest.raises(DataError) as got:
            load_market_arrays(path)
        assert str(got.value) == str(want.value)
        assert str(got.value).startswith(str(path)) and "\n" not in str(got.value)


def test_duplicates_name_the_earliest_repeat() -> None:
    t = np.array([0, 1, 2, 3, 1, 0, 2], dtype=np.int64) * BAR_MS
    with pytest.raises(DataError, match=r"^x: 3 duplicate timestamp\(s\), first 1970-01-01 00:15 UTC$"):
        check_times(t, "x")


def test_from_frame_keeps_the_frame_values(small: pd.DataFrame) -> None:
    arrays = MarketArrays.from_frame(small)
    np.testing.assert_array_equal(arrays.open_time_ms, small.index.asi8)
    for name in small.columns:
        np.testing.assert_array_equal(arrays.columns[name], small[name].to_numpy())
    with pytest.raises(DataError, match=r"^XRPUSDT: market frame needs a DatetimeIndex"):
        MarketArrays.from_frame(small.reset_index(), "XRPUSDT")


def test_loading_imports_no_pandas(tmp_path: Path, small: pd.DataFrame) -> None:
    # Nor pyarrow.compute (~0.07 s): the open times are read from the timestamp's storage, no cast.
    path = save_market(small, tmp_path / "m.parquet", closed_through_ms=int(small.index.asi8[-1]))
    code = (
        "import sys; from pathlib import Path\n"
        "from perpbot.data.market_arrays import load_market_arrays\n"
        f"a = load_market_arrays(Path({str(path)!r}))\n"
        "assert len(a) == 200, len(a)\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
        "assert 'pyarrow.compute' not in sys.modules, 'pyarrow.compute was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


@pytest.mark.realdata
def test_real_files_load_the_same(real_data_dir: Path) -> None:
    for sym in ("xrpusdt", "trxusdt", "dogeusdt"):
        path = real_data_dir / sym / "combined_15m.parquet"
        assert direct_arrays(read_table(path)) is not None
        assert_same(path)
