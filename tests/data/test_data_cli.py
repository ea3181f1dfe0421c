"""``perpbot synth`` / ``perpbot fetch`` through the real typer app (CliRunner), bad input included."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from perpbot.data import fetch
from perpbot.data.schema import data_path
from perpbot.data.store import data_file_sha256, load_market, save_market, synthetic_origin
from perpbot.data.synth import synth_market
from tests.support.cli import invoke, load_script, one_line_error
from tests.support.data import BAD_PARQUETS, forbid_recompute
from tests.support.fake_binance import PATH_KLINES, FakeBinance


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ``.env`` and no stray variables from the developer's shell."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYMBOLS", "XRPUSDT,TRXUSDT,DOGEUSDT")
    monkeypatch.setenv("CORRELATION_SYMBOLS", "BTCUSDT,ETHUSDT")
    monkeypatch.delenv("BINANCE_FAPI_URL", raising=False)
    monkeypatch.delenv("SYMBOL", raising=False)
    monkeypatch.setattr(fetch, "DEFAULT_PACING", fetch.Pacing(0.0, 0.0, 0.0))


@pytest.fixture
def fake(synth_market: pd.DataFrame) -> Iterator[FakeBinance]:
    server = FakeBinance.from_market(synth_market)
    with server.running_in_thread():
        yield server


# -- synth -------------------------------------------------------------------------------------


def test_synth_one_symbol_writes_a_loadable_deterministic_file(tmp_path: Path) -> None:
    res = invoke("synth", "--symbol", "trxusdt", "--days", "3", "--seed", "5", "--data-dir", "d", "--quiet")
    assert res.exit_code == 0, res.output
    path = data_path(tmp_path / "d", "TRXUSDT")
    assert str(path.relative_to(tmp_path)) in res.output.replace("\n", "")
    # The file says every candle is closed, so nothing is dropped on load.
    pd.testing.assert_frame_equal(load_market(path), synth_market(3, 5, symbol="TRXUSDT"))
    digest = data_file_sha256(path)
    again = ("synth", "--symbol", "TRXUSDT", "--days", "3", "--seed", "5", "--data-dir", "d")
    assert invoke(*again, "--force").exit_code == 0  # issue 11: overwriting needs --force
    assert data_file_sha256(path) == digest


def test_synth_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    """A recorded file is never replaced by a synthetic one silently (issue 11 §1)."""
    recorded = data_path(tmp_path / "d", "XRPUSDT")
    save_market(synth_market(2, 1, symbol="XRPUSDT"), recorded)  # stands in for a fetched file
    before = recorded.read_bytes()
    res = invoke("synth", "--symbols", "XRPUSDT", "--days", "2", "--data-dir", "d", "--quiet")
    one_line_error(res, "xrpusdt/combined_15m.parquet already exists", "recorded", "--force")
    assert recorded.read_bytes() == before
    assert invoke("synth", "--symbol", "XRPUSDT", "--days", "2", "--data-dir", "d", "--force").exit_code == 0
    assert synthetic_origin(recorded) == "perpbot synth, seed 7, 2 days"
    assert synthetic_origin(data_path(tmp_path / "d", "NOPEUSDT")) is None


def test_commands_that_load_a_synthetic_file_say_so(tmp_path: Path) -> None:
    assert invoke("synth", "--symbol", "XRPUSDT", "--days", "20", "--data-dir", "d", "--quiet").exit_code == 0
    out = tmp_path / "f.parquet"
    for args in (
        ("features", "--symbol", "XRPUSDT", "--data-dir", "d", "--out", str(out), "--quiet"),
        ("backtest", "--symbol", "XRPUSDT", "--data-dir", "d", "--no-ml", "--out", "bt", "--quiet"),
        ("train", "--symbol", "XRPUSDT", "--data-dir", "d", "--model-dir", "m", "--wf", "0", "--quiet"),
    ):
        res = invoke(*args)
        assert (
            "XRPUSDT" in res.stderr and "SYNTHETIC market (perpbot synth, seed 7, 20 days)" in res.stderr
        ), (
            args,
            res.output,
        )


def test_nan_in_several_columns_names_them_all(tmp_path: Path) -> None:
    import numpy as np

    from perpbot.errors import DataError

    frame = synth_market(2, 1, symbol="XRPUSDT")
    frame.iloc[5, frame.columns.get_loc("close")] = np.nan
    frame.iloc[7, frame.columns.get_loc("volume")] = np.nan
    frame.iloc[9, frame.columns.get_loc("close_btc")] = np.inf
    with pytest.raises(DataError) as err:
        save_market(frame, tmp_path / "x.parquet")
    msg = str(err.value)
    assert "non-finite values in 3 columns" in msg
    for col in ("close: 1 row(s)", "volume: 1 row(s)", "close_btc: 1 row(s)"):
        assert col in msg


def test_synth_all_writes_every_configured_symbol(tmp_path: Path) -> None:
    res = invoke("synth", "--all", "--days", "2", "--data-dir", str(tmp_path / "d"), "--quiet")
    assert res.exit_code == 0, res.output
    for sym in ("XRPUSDT", "TRXUSDT", "DOGEUSDT"):
        assert len(load_market(data_path(tmp_path / "d", sym))) == 2 * 96


def test_synth_and_fetch_show_a_progress_bar_unless_quiet(fake: FakeBinance, tmp_path: Path) -> None:
    """The bar goes to stderr (stdout keeps the results); ``--quiet`` leaves stderr empty."""
    synth = ("synth", "--symbol", "XRPUSDT", "--days", "2")
    fetch_ = ("fetch", "--symbol", "XRPUSDT", "--days", "2", "--no-oi", "--base-url", fake.base_url)
    for args, description in ((synth, "synth"), (fetch_, "fetch XRPUSDT")):
        shown = invoke(*args, "--data-dir", "shown")
        assert shown.exit_code == 0, shown.output
        assert description in shown.stderr and "━" in shown.stderr, shown.stderr
        quiet = invoke(*args, "--data-dir", "quiet", "--quiet")
        assert quiet.exit_code == 0, quiet.output
        assert quiet.stderr == "" and "XRPUSDT" in quiet.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("synth", "--symbol", "XRPUSDT", "--all"), ("--symbol and --all are mutually exclusive",)),
        (("fetch", "--symbol", "XRPUSDT", "--all"), ("--symbol and --all are mutually exclusive",)),
        (("synth", "--symbol", "xrp-usd"), ("--symbol='xrp-usd'", "not a USDT-M perpetual symbol")),
        (("fetch", "--symbol", "BTC"), ("--symbol='BTC'",)),
        (("synth", "--symbol", "XRPUSDT", "--days", "0"), ("--days=0",)),
        (("fetch", "--symbol", "XRPUSDT", "--base-url", "localhost:1"), ("expected http(s)://",)),
    ],
)
def test_bad_flags_are_one_line_errors(
    tmp_path: Path, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    one_line_error(invoke(*args, "--data-dir", "d", "--quiet"), *fragments)
    assert not (tmp_path / "d").exists()  # nothing written


# -- fetch -------------------------------------------------------------------------------------


def test_fetch_end_to_end_via_config_url(
    fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synth_market: pd.DataFrame
) -> None:
    monkeypatch.setenv("BINANCE_FAPI_URL", fake.base_url)  # no --base-url: the config supplies it
    res = invoke("fetch", "--symbol", "XRPUSDT", "--days", "2", "--no-oi", "--data-dir", "d", "--quiet")
    assert res.exit_code == 0, res.output
    df = load_market(data_path(tmp_path / "d", "XRPUSDT"))
    assert len(df) == 2 * 96 and df.index[-1] == synth_market.index[-2]
    assert "XRPUSDT: 192 candles downloaded" in res.output


def test_the_backtest_after_synth_or_fetch_starts_from_a_warm_input_cache(
    fake: FakeBinance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 13: the command that writes a data file also stores its input cache entry (arrays and
    # features for the configured parameters), so the next backtest neither decodes nor computes.
    monkeypatch.setenv("PERPBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BINANCE_FAPI_URL", fake.base_url)
    assert invoke("synth", "--symbol", "TRXUSDT", "--days", "20", "--data-dir", "d", "--quiet").exit_code == 0
    res = invoke("fetch", "--symbol", "XRPUSDT", "--days", "2", "--no-oi", "--data-dir", "d", "--quiet")
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "cache").glob("*.arrays"))) == 2
    with monkeypatch.context() as m:
        forbid_recompute(m)
        res = invoke("backtest", "--symbols", "TRXUSDT,XRPUSDT", "--data-dir", "d", "--no-ml", "--out", "bt")
        assert res.exit_code == 0, res.output
    monkeypatch.setenv("PERPBOT_CACHE_DIR", "off")  # the same run, computed from the files
    res_off = invoke("backtest", "--symbols", "TRXUSDT,XRPUSDT", "--data-dir", "d", "--no-ml", "--out", "bt2")
    assert res_off.exit_code == 0, res_off.output
    fingerprint = [line for line in res.output.splitlines() if line.startswith("fingerprint ")]
    assert fingerprint and fingerprint == [
        line for line in res_off.output.splitlines() if line.startswith("fingerprint ")
    ]


def test_synth_with_the_input_cache_off_stores_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERPBOT_CACHE_DIR", "off")
    forbid_recompute(monkeypatch)  # nothing is even computed for it
    assert invoke("synth", "--symbol", "TRXUSDT", "--days", "3", "--data-dir", "d", "--quiet").exit_code == 0


def test_fetch_unknown_symbol(fake: FakeBinance) -> None:
    res = invoke("fetch", "--symbol", "NOPEUSDT", "--base-url", fake.base_url, "--data-dir", "d", "--quiet")
    one_line_error(res, "NOPEUSDT: unknown symbol")


@BAD_PARQUETS
def test_fetch_refuses_to_upsert_into_a_bad_file(
    fake: FakeBinance, tmp_path: Path, synth_market: pd.DataFrame, make_bad, fragment: str
) -> None:
    path = data_path(tmp_path / "d", "XRPUSDT")
    path.parent.mkdir(parents=True)
    make_bad(path, synth_market)
    before = path.read_bytes()
    res = invoke(
        "fetch", "--symbol", "XRPUSDT", "--days", "2", "--base-url", fake.base_url, "--data-dir", "d"
    )
    line = one_line_error(res, str(path.relative_to(tmp_path)), fragment)
    assert "Traceback" not in line
    assert path.read_bytes() == before  # untouched
    assert fake.calls(PATH_KLINES) == []  # refused before downloading anything


# -- scripts/fetch_history.py ------------------------------------------------------------------


def test_script_keeps_the_spec_flags_and_calls_the_same_code(fake: FakeBinance, tmp_path: Path) -> None:
    script = load_script("fetch_history.py")
    out = tmp_path / "custom" / "x.parquet"
    argv = ["--symbols", "XRPUSDT", "BTCUSDT", "ETHUSDT", "--interval", "15m", "--days", "2", "--no-oi"]
    assert script.run([*argv, "--output", str(out), "--base-url", fake.base_url, "--quiet"]) == 0
    assert len(load_market(out)) == 2 * 96
    assert script.run(["--symbol", "XRPUSDT", "--days", "1", "--no-upsert", "--base-url", fake.base_url]) == 0
    assert len(load_market(data_path(tmp_path / "data", "XRPUSDT"))) == 96


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--interval", "1h"], "--interval='1h': only 15m is supported"),
        (["--symbols", "XRPUSDT", "BTCUSDT"], "give a primary, optionally with btc- and eth-role"),
        (["--symbol", "XRPUSDT", "--all"], "mutually exclusive"),
    ],
)
def test_script_bad_input_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    script = load_script("fetch_history.py")
    monkeypatch.setattr(sys, "argv", ["fetch_history.py", *argv])
    assert script.main() == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err
