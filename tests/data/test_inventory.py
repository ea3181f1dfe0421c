"""``perpbot data``: coverage, gaps, synthetic or recorded, OI present or all zero, per symbol."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perpbot.data.inventory import SYNTHETIC_KEY, data_status
from perpbot.data.schema import data_path
from perpbot.data.store import save_market
from perpbot.data.synth import synth_market
from tests.support.cli import invoke


def _save(root: Path, symbol: str, frame, **meta: bytes) -> Path:  # type: ignore[no-untyped-def]
    path = save_market(
        frame, data_path(root, symbol), closed_through_ms=int(frame.index.as_unit("ms").asi8[-1])
    )
    if meta:
        table = pq.read_table(path)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
        pq.write_table(table, path)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    frame = synth_market(10, 3, symbol="XRPUSDT")
    _save(tmp_path, "XRPUSDT", frame)  # no synthetic mark: recorded
    _save(
        tmp_path,
        "TRXUSDT",
        synth_market(10, 4, symbol="TRXUSDT"),
        **{SYNTHETIC_KEY.decode(): b"seed 4, 10 days"},
    )
    holed = synth_market(10, 5, symbol="DOGEUSDT")
    holed = holed.drop(holed.index[100:103]).drop(holed.index[500:501])  # 2 gaps, 4 candles missing
    holed["oi_change"] = 0.0
    path = data_path(tmp_path, "DOGEUSDT")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(holed), path)  # save_market would refuse the gaps
    return tmp_path


def test_status_of_each_kind_of_file(root: Path) -> None:
    xrp = data_status(root, "XRPUSDT")
    assert xrp.exists and xrp.source == "recorded" and xrp.problem is None
    assert xrp.candles == 960 and xrp.gaps == 0 and xrp.coverage == 1.0 and xrp.days == pytest.approx(10.0)
    assert data_status(root, "TRXUSDT").source == "synthetic"
    doge = data_status(root, "DOGEUSDT")
    assert (doge.gaps, doge.missing, doge.largest_gap_bars) == (2, 4, 3)
    assert doge.coverage == pytest.approx(956 / 960)
    assert doge.problem is not None and "gap" in doge.problem  # the loader's own refusal
    assert doge.oi == "all zero"
    missing = data_status(root, "ADAUSDT")
    assert not missing.exists and missing.source == "missing"


def test_oi_state(root: Path) -> None:
    xrp = data_status(root, "XRPUSDT")
    assert xrp.oi.startswith("available") or xrp.oi == "all zero"
    assert xrp.funding.startswith("available")


def test_data_command(root: Path) -> None:
    res = invoke("data", "--data-dir", str(root), "--symbols", "XRPUSDT,TRXUSDT,DOGEUSDT,ADAUSDT")
    assert res.exit_code == 0, res.output
    rows = {
        line.split()[0]: line.split()
        for line in res.stdout.splitlines()
        if line[:3] in ("XRP", "TRX", "DOG", "ADA")
    }
    assert rows["XRPUSDT"][1] == "recorded" and rows["TRXUSDT"][1] == "synthetic"
    assert rows["DOGEUSDT"][7] == "zero" and rows["ADAUSDT"][1] == "missing"
    assert "DOGEUSDT: 2 gap(s), 4 candle(s) missing, the largest 3" in res.stdout
    assert "DOGEUSDT: open interest is all zero" in res.stdout
    assert "ADAUSDT: no data file" in res.stdout
    table_rows = [
        line
        for line in res.stdout.splitlines()
        if line[:3] in ("XRP", "TRX", "DOG", "ADA") and ":" not in line
    ]
    assert len(table_rows) == 4 and all(len(line) <= 80 for line in table_rows)


def test_data_command_bad_symbol_options(root: Path) -> None:
    from tests.support.cli import one_line_error

    one_line_error(
        invoke("data", "--data-dir", str(root), "--symbol", "XRPUSDT", "--all"), "mutually exclusive"
    )
