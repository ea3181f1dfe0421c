"""load_market / save_market / upsert_market / data_file_sha256."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from perpbot.data import store
from perpbot.data.schema import ALL_COLUMNS, BAR_MS, BTC_COLS, ETH_COLS, MICRO_COLS, OHLCV, data_path
from perpbot.data.store import (
    CLOSED_THROUGH_KEY,
    data_file_sha256,
    load_market,
    save_market,
    upsert_market,
    validate_market,
)
from perpbot.errors import DataError, PerpbotError
from tests.support.data import foreign


def load_error(path: Path, **kw: object) -> str:
    with pytest.raises(DataError) as info:
        load_market(path, **kw)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith(str(path)), msg
    assert isinstance(info.value, PerpbotError) and info.value.exit_code == 2
    return msg


# -- round trip and the partial last candle -------------------------------------------------


def test_round_trip_keeps_every_closed_row(tmp_path: Path, small: pd.DataFrame) -> None:
    path = save_market(small, tmp_path / "a" / "b" / "m.parquet", closed_through_ms=int(small.index.asi8[-1]))
    out = load_market(path)
    pd.testing.assert_frame_equal(out, small)
    assert list(out.columns) == list(ALL_COLUMNS)
    assert str(out.index.dtype) == "datetime64[ms, UTC]" and out.index.name == "timestamp"
    assert all(dtype == np.float64 for dtype in out.dtypes)
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["m.parquet"]  # no temp file left behind


def test_rows_after_closed_through_marker_are_dropped(tmp_path: Path, small: pd.DataFrame) -> None:
    marker = int(small.index.asi8[-3])
    path = save_market(small, tmp_path / "m.parquet", closed_through_ms=marker)
    assert pq.read_schema(path).metadata[CLOSED_THROUGH_KEY] == str(marker).encode()
    out = load_market(path)
    assert len(out) == len(small) - 2 and int(out.index.asi8[-1]) == marker
    assert len(load_market(path, drop_partial_last=False)) == len(small)
    assert len(load_market(path, drop_partial_last=True)) == len(small) - 1


def test_foreign_file_loses_its_possibly_partial_final_row(tmp_path: Path, small: pd.DataFrame) -> None:
    path = foreign(small, tmp_path / "m.parquet")
    pd.testing.assert_frame_equal(load_market(path), small.iloc[:-1])
    pd.testing.assert_frame_equal(load_market(path, drop_partial_last=False), small)
    unmarked = save_market(small, tmp_path / "n.parquet", closed_through_ms=None)
    assert len(load_market(unmarked)) == len(small) - 1


def test_timestamp_column_and_ns_unit_are_accepted(tmp_path: Path, small: pd.DataFrame) -> None:
    as_column = small.reset_index()
    as_column["timestamp"] = as_column["timestamp"].dt.as_unit("ns")
    path = foreign(as_column, tmp_path / "m.parquet")
    out = load_market(path, drop_partial_last=False)
    pd.testing.assert_frame_equal(out, small)
    assert str(out.index.dtype) == "datetime64[ms, UTC]"


def test_optional_columns(tmp_path: Path, small: pd.DataFrame) -> None:
    bare = small[list(OHLCV)]
    out = load_market(foreign(bare, tmp_path / "bare.parquet"), drop_partial_last=False)
    assert list(out.columns) == [*OHLCV, *MICRO_COLS]
    assert (out[list(MICRO_COLS)] == 0.0).all().all()

    holes = small.copy()
    holes.iloc[5, holes.columns.get_loc("oi_change")] = np.nan
    holes.iloc[7, holes.columns.get_loc("funding_rate")] = np.nan
    holes = holes[[*OHLCV, *ETH_COLS, *MICRO_COLS, *BTC_COLS]].astype({"volume": "float32"})  # odd order
    out = load_market(foreign(holes, tmp_path / "holes.parquet"), drop_partial_last=False)
    assert list(out.columns) == list(ALL_COLUMNS)
    assert out["oi_change"].iloc[5] == 0.0 and out["funding_rate"].iloc[7] == 0.0
    assert out["oi_change"].iloc[6] == small["oi_change"].iloc[6]


# -- what exactly is wrong --------------------------------------------------------------------


def test_missing_empty_truncated_and_garbage_files(tmp_path: Path, small: pd.DataFrame) -> None:
    assert "file not found" in load_error(tmp_path / "nope.parquet")
    (tmp_path / "empty.parquet").write_bytes(b"")
    assert "empty file (0 bytes)" in load_error(tmp_path / "empty.parquet")
    good = save_market(small, tmp_path / "good.parquet", closed_through_ms=None).read_bytes()
    (tmp_path / "cut.parquet").write_bytes(good[: len(good) // 2])
    assert "unreadable parquet" in load_error(tmp_path / "cut.parquet")
    (tmp_path / "text.parquet").write_text("timestamp,open\n1,2\n")
    assert "unreadable parquet" in load_error(tmp_path / "text.parquet")
    (tmp_path / "dir.parquet").mkdir()
    assert "is a folder" in load_error(tmp_path / "dir.parquet")
    no_rows = foreign(small.iloc[:0], tmp_path / "rows0.parquet")
    assert load_error(no_rows).endswith(": no rows")
    one_row = foreign(small.iloc[:1], tmp_path / "rows1.parquet")
    assert "no closed candles" in load_error(one_row)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.drop(columns=["close", "volume"]), "missing required column(s): close, volume"),
        (lambda d: d.drop(columns=["close_btc"]), "incomplete btc-role columns"),
        (lambda d: d.drop(columns=list(ETH_COLS[:4])), "incomplete eth-role columns"),
        (lambda d: d.assign(volume="x"), "column volume is not numeric"),
        (lambda d: d.tz_localize(None), "tz-naive"),
        (lambda d: d.set_axis(d.index.asi8, axis=0).rename_axis("timestamp"), "expected a UTC datetime"),
        (lambda d: d.rename_axis("time"), "no 'timestamp' index or column"),
    ],
    ids=["required", "btc-group", "eth-group", "non-numeric", "tz-naive", "int-index", "no-timestamp"],
)
def test_schema_errors(tmp_path: Path, small: pd.DataFrame, mutate, expected: str) -> None:
    assert expected in load_error(foreign(mutate(small), tmp_path / "bad.parquet"))


def test_other_time_zones_are_converted_to_utc(tmp_path: Path, small: pd.DataFrame) -> None:
    path = foreign(small.tz_convert("Asia/Tokyo"), tmp_path / "tokyo.parquet")
    pd.testing.assert_frame_equal(load_market(path, drop_partial_last=False), small)


def _ts(df: pd.DataFrame, i: int) -> str:
    return df.index[i].strftime("%Y-%m-%d %H:%M UTC")


def test_duplicates_and_order(tmp_path: Path, small: pd.DataFrame) -> None:
    dup = pd.concat([small.iloc[:50], small.iloc[40:45], small.iloc[50:]])
    msg = load_error(foreign(dup, tmp_path / "dup.parquet"), drop_partial_last=False)
    assert f"5 duplicate timestamp(s), first {_ts(small, 40)}" in msg

    swapped = small.iloc[[*range(30), 31, 30, *range(32, 200)]]
    msg = load_error(foreign(swapped, tmp_path / "swap.parquet"), drop_partial_last=False)
    assert f"not strictly increasing: {_ts(small, 30)} follows {_ts(small, 31)}" in msg


def test_gaps_report_first_gap_and_count(tmp_path: Path, small: pd.DataFrame) -> None:
    gappy = small.drop(index=small.index[[10, 11, 12, 50]])
    msg = load_error(foreign(gappy, tmp_path / "gap.parquet"))
    assert "2 gap(s) in the 15-minute sequence (4 candle(s) missing)" in msg
    assert f"first after {_ts(small, 9)} (next candle {_ts(small, 13)})" in msg


def test_off_grid_step(tmp_path: Path, small: pd.DataFrame) -> None:
    shifted = small.copy()
    idx = shifted.index.asi8.copy()
    idx[20:] += 5 * 60_000
    shifted.index = pd.to_datetime(idx, unit="ms", utc=True).as_unit("ms").rename("timestamp")
    assert "not a 15-minute step" in load_error(foreign(shifted, tmp_path / "odd.parquet"))


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("close", np.nan, "non-finite close"),
        ("high_btc", np.inf, "non-finite high_btc"),
        ("open", 0.0, "non-positive open"),
        ("low_eth", -1.0, "non-positive low_eth"),
        ("high", 1e-6, "high < max(open, close)"),
        ("low", 1e6, "low > min(open, close)"),
        ("volume", -1.0, "negative volume"),
        ("volume_eth", np.nan, "non-finite volume_eth"),
        ("oi_change", np.inf, "non-finite oi_change"),
    ],
)
def test_value_errors(tmp_path: Path, small: pd.DataFrame, column: str, value: float, expected: str) -> None:
    bad = small.copy()
    bad.iloc[[17, 90], bad.columns.get_loc(column)] = value
    msg = load_error(foreign(bad, tmp_path / "bad.parquet"))
    assert msg.endswith(f"{expected}: 2 row(s), first {_ts(small, 17)}"), msg


def test_bad_closed_through_metadata(tmp_path: Path, small: pd.DataFrame) -> None:
    path = save_market(small, tmp_path / "m.parquet", closed_through_ms=1)
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[CLOSED_THROUGH_KEY] = b"soon"
    pq.write_table(table.replace_schema_metadata(meta), path)
    assert "bad perpbot.closed_through_ms metadata" in load_error(path)


# -- writing ----------------------------------------------------------------------------------


def test_save_refuses_invalid_frames_and_keeps_the_old_file(tmp_path: Path, small: pd.DataFrame) -> None:
    path = save_market(small, tmp_path / "m.parquet", closed_through_ms=None)
    before = path.read_bytes()
    gappy = small.drop(index=small.index[5])
    with pytest.raises(DataError, match="gap"):
        save_market(gappy, path, closed_through_ms=None)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]


def test_interrupted_write_leaves_old_file_and_no_temp(
    tmp_path: Path, small: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_market(small, tmp_path / "m.parquet", closed_through_ms=None)
    before = path.read_bytes()

    def boom(table: object, where: object) -> None:
        Path(str(where)).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(store.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        save_market(small.iloc[:100], path, closed_through_ms=None)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]


def test_unwritable_folder_is_a_one_line_error(tmp_path: Path, small: pd.DataFrame) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot write here"):
        save_market(small, blocker / "x" / "m.parquet", closed_through_ms=None)


def test_data_file_sha256(tmp_path: Path, small: pd.DataFrame) -> None:
    path = save_market(small, data_path(tmp_path, "XRPUSDT"), closed_through_ms=None)
    assert data_file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    save_market(small.iloc[:-1], path, closed_through_ms=None)
    assert data_file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", data_file_sha256(path))


def test_validate_market_accepts_in_memory_frames(small: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(validate_market(small.reset_index()), small)
    with pytest.raises(DataError, match=r"^mine: .*gap"):
        validate_market(small.drop(index=small.index[3]), "mine")


# -- upsert (SPEC §7.1, §14 "Upsert" rows) ----------------------------------------------------


def frame(times: list[str], oi: list[float], funding: list[float], close: float = 1.0) -> pd.DataFrame:
    idx = pd.DatetimeIndex(pd.to_datetime(times, utc=True), name="timestamp").as_unit("ms")
    n = len(times)
    data = {c: [close] * n for c in ("open", "high", "low", "close")}
    data |= {"volume": [10.0] * n, "oi_change": oi, "funding_rate": funding}
    return pd.DataFrame(data, index=idx)


T = ["2025-01-01 00:00", "2025-01-01 00:15", "2025-01-01 00:30"]


def test_upsert_replaces_stored_zero_micro_values_only() -> None:
    stored = frame(T[:2], oi=[0.0, 0.07], funding=[0.0, 0.0003])
    new = frame(T[:2], oi=[0.05, 0.05], funding=[0.0001, 0.0001], close=2.0)
    out = upsert_market(stored, new)
    assert out["oi_change"].tolist() == [0.05, 0.07]  # stored 0.0 → 0.05; stored 0.07 kept
    assert out["funding_rate"].tolist() == [0.0001, 0.0003]
    assert out["close"].tolist() == [2.0, 2.0]  # candles come from the new download


def test_upsert_appends_new_timestamps_and_sorts() -> None:
    stored = frame(T[:2], oi=[0.01, 0.02], funding=[0.0, 0.0])
    new = frame([T[2], T[1]], oi=[0.03, 0.0], funding=[0.0002, 0.0002])  # out of order
    out = upsert_market(stored, new)
    assert out.index.is_monotonic_increasing and list(out.index) == list(pd.to_datetime(T, utc=True))
    assert out["oi_change"].tolist() == [0.01, 0.02, 0.03]
    assert out["funding_rate"].tolist() == [0.0, 0.0002, 0.0002]


def test_upsert_without_existing_file_is_the_new_frame_sorted_and_deduplicated() -> None:
    new = frame([T[1], T[0], T[1]], oi=[0.5, 0.1, np.nan], funding=[np.nan, 0.0, 0.0004])
    new.iloc[2, new.columns.get_loc("close")] = 9.0
    for existing in (None, new.iloc[:0]):
        out = upsert_market(existing, new)
        assert list(out.index) == list(pd.to_datetime(T[:2], utc=True))
        assert out["close"].tolist() == [1.0, 9.0]  # duplicate timestamps keep the last
        assert out["oi_change"].tolist() == [0.1, 0.0] and out["funding_rate"].tolist() == [0.0, 0.0004]


def test_upsert_localises_naive_indexes_to_utc_and_fills_missing_micro_columns() -> None:
    stored = frame(T[:1], oi=[0.02], funding=[0.0001]).tz_localize(None)
    new = frame(T[:2], oi=[0.0, 0.0], funding=[0.0, 0.0]).drop(columns=["oi_change"])
    stored.loc[stored.index[0], "funding_rate"] = np.nan
    out = upsert_market(stored, new)
    assert str(out.index.dtype) == "datetime64[ms, UTC]"
    assert out["oi_change"].tolist() == [0.02, 0.0]
    assert out["funding_rate"].tolist() == [0.0, 0.0]  # stored NaN counts as "not known"
    assert list(out.columns) == [*OHLCV, *MICRO_COLS]


def test_upsert_then_save_round_trips(tmp_path: Path, small: pd.DataFrame) -> None:
    old, new = small.iloc[:120], small.iloc[100:]
    merged = upsert_market(old, new)
    path = save_market(merged, tmp_path / "m.parquet", closed_through_ms=int(merged.index.asi8[-1]))
    pd.testing.assert_frame_equal(load_market(path), small)
    assert (merged.index.asi8[1:] - merged.index.asi8[:-1] == BAR_MS).all()


# -- real data ---------------------------------------------------------------------------------


def _readme_rows(readme: Path) -> dict[str, tuple[int, str]]:
    rows = {}
    for line in readme.read_text().splitlines():
        m = re.match(r"\|\s*`(\w+)/combined_15m\.parquet`\s*\|\s*([\d,]+)\s*\|[^|]*\|\s*([^|]+?)\s*\|", line)
        if m:
            rows[m.group(1)] = (int(m.group(2).replace(",", "")), m.group(3))
    return rows


@pytest.mark.realdata
def test_real_files_load_with_final_row_dropped(real_data_dir: Path) -> None:
    expected = _readme_rows(real_data_dir / "README.md")
    assert set(expected) == {"xrpusdt", "trxusdt", "dogeusdt"}
    for folder, (rows, last) in expected.items():
        df = load_market(real_data_dir / folder / "combined_15m.parquet")
        assert len(df) == rows - 1, folder
        assert df.index[-1] == pd.Timestamp(last, tz="UTC") - pd.Timedelta(minutes=15)
        assert list(df.columns) == list(ALL_COLUMNS)
        assert (df["oi_change"] == 0.0).all()  # documented: no OI history for this period
