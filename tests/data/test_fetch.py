"""History download end-to-end against the loopback fake Binance (no internet)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from rich.progress import Progress

from perpbot.config import CorrelationMap
from perpbot.data.candle_shape import funding_on_candles, oi_change_on_candles
from perpbot.data.fetch import FetchOptions, fetch_history_async
from perpbot.data.history_client import (
    DEFAULT_FAPI_URL,
    FetchError,
    RetryPolicy,
    make_exchange,
    resolve_base_url,
)
from perpbot.data.schema import BAR_MS, BTC_COLS, ETH_COLS, OHLCV, data_path
from perpbot.data.store import load_market, save_market
from perpbot.errors import ConfigError, DataError
from tests.support.fake_binance import (
    KNOWN_PATHS,
    PATH_FUNDING,
    PATH_KLINES,
    PATH_OI_HIST,
    PATH_TIME,
    FakeBinance,
    Fault,
    Instrument,
)

DAY_MS = 86_400_000
PRICE_COLS = list(OHLCV + BTC_COLS + ETH_COLS)


class SleepRecorder:
    """Injected instead of asyncio.sleep: records every wait, waits for nothing."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
async def fake(synth_market: pd.DataFrame):
    async with FakeBinance.from_market(synth_market) as server:
        yield server


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


async def run(fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder, symbols=("XRPUSDT",), **kw):
    kw.setdefault("options", FetchOptions(days=20))
    return await fetch_history_async(
        list(symbols), data_dir=tmp_path, base_url=fake.base_url, sleep=sleeps, **kw
    )


def kline_calls(fake: FakeBinance, symbol: str) -> list[dict[str, str]]:
    return [r.params for r in fake.calls(PATH_KLINES) if r.params.get("symbol") == symbol]


# -- the happy path ----------------------------------------------------------------------------


async def test_pages_closed_candles_funding_and_oi(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder, synth_market: pd.DataFrame
) -> None:
    (summary,) = await run(fake, tmp_path, sleeps)
    path = data_path(tmp_path, "XRPUSDT")
    assert summary.path == path
    df = load_market(path)
    last_closed = synth_market.index[-2]  # the fake's clock sits inside the last candle
    assert df.index[-1] == last_closed and len(load_market(path, drop_partial_last=False)) == len(df)
    assert len(df) == summary.downloaded == 20 * 96
    expected = synth_market.loc[df.index]
    pd.testing.assert_frame_equal(df[PRICE_COLS], expected[PRICE_COLS])  # role suffixes, exact floats
    np.testing.assert_array_equal(df["funding_rate"], expected["funding_rate"])
    assert df["oi_change"].iloc[0] == 0.0  # first OI change of the download is 0 by definition
    np.testing.assert_allclose(
        df["oi_change"].iloc[1:], expected["oi_change"].iloc[1:], rtol=1e-9, atol=1e-12
    )

    # Paging: 1920 candles need two pages of 1500; the second starts at last open + 1.
    calls = kline_calls(fake, "XRPUSDT")
    assert len(calls) == 2 and calls[0]["limit"] == "1500"
    first_page_last_open = int(calls[0]["startTime"]) + 1499 * BAR_MS
    assert int(calls[1]["startTime"]) == first_page_last_open + 1
    assert len(kline_calls(fake, "BTCUSDT")) == len(kline_calls(fake, "ETHUSDT")) == 2
    # Only the documented endpoints were called, and nothing failed.
    assert {r.path for r in fake.calls()} <= set(KNOWN_PATHS)
    assert all(r.status == 200 for r in fake.calls())
    assert sleeps.calls.count(0.3) >= 3 and 1.0 in sleeps.calls  # page pacing and stage pause


async def test_no_oi_skips_open_interest(fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder) -> None:
    await run(fake, tmp_path, sleeps, options=FetchOptions(days=3, with_oi=False))
    assert fake.calls(PATH_OI_HIST) == []
    assert (load_market(data_path(tmp_path, "XRPUSDT"))["oi_change"] == 0.0).all()


async def test_oi_exists_only_for_the_last_30_days(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder, synth_market: pd.DataFrame
) -> None:
    await run(fake, tmp_path, sleeps, options=FetchOptions(days=45))
    df = load_market(data_path(tmp_path, "XRPUSDT"))
    recent = df.index.asi8 >= fake.now_ms - 30 * DAY_MS + DAY_MS // 24
    assert (df.loc[~recent, "oi_change"] == 0.0).all()
    np.testing.assert_allclose(
        df["oi_change"][recent][1:], synth_market.loc[df.index[recent][1:], "oi_change"]
    )
    oi_windows = [int(r.params["startTime"]) for r in fake.calls(PATH_OI_HIST)]
    assert min(oi_windows) >= fake.now_ms - 30 * DAY_MS and len(oi_windows) == 6


async def test_funding_settled_a_few_ms_late_still_belongs_to_its_candle(
    synth_market: pd.DataFrame, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    async with FakeBinance.from_market(synth_market, funding_offset_ms=3) as fake:
        await run(fake, tmp_path, sleeps, options=FetchOptions(days=5, with_oi=False))
    df = load_market(data_path(tmp_path, "XRPUSDT"))
    np.testing.assert_array_equal(df["funding_rate"], synth_market.loc[df.index, "funding_rate"])
    (call,) = fake.calls(PATH_FUNDING)  # one page; starts a period early to know the rate in force
    assert int(call.params["startTime"]) == df.index.asi8[0] - 8 * 3_600_000


def test_funding_forward_fill_and_zero_before_first_event() -> None:
    idx = pd.date_range("2025-01-01", periods=8 * 4 + 2, freq="15min", tz="UTC").as_unit("ms")
    t0 = int(idx.asi8[0])
    events = pd.Series({t0 + 4 * BAR_MS + 2: 0.0001, t0 + 20 * BAR_MS: -0.0002})
    out = funding_on_candles(idx, events)
    assert (out[:4] == 0.0).all() and (out[4:20] == 0.0001).all() and (out[20:] == -0.0002).all()
    assert (funding_on_candles(idx, pd.Series(dtype="float64")) == 0.0).all()


def test_oi_merge_nearest_within_eight_minutes() -> None:
    idx = pd.date_range("2025-01-01", periods=6, freq="15min", tz="UTC").as_unit("ms")
    t = idx.asi8
    minute = 60_000
    oi = pd.Series({
        int(t[0]): 100.0,
        int(t[1]) + 5 * minute: 110.0,  # 5 min late: merged onto candle 1
        int(t[2]) - 7 * minute: 99.0,  # 7 min early: merged onto candle 2
        int(t[4]) + 9 * minute: 0.0,  # too far from any candle: dropped
        int(t[5]): 50.0,  # previous value not positive → change 0
    })  # fmt: skip
    out = oi_change_on_candles(idx, oi)
    np.testing.assert_allclose(out, [0.0, 0.1, 99 / 110 - 1, 0.0, 0.0, 0.0])


async def test_all_symbols_share_one_correlation_download(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder, synth_market: pd.DataFrame
) -> None:
    from perpbot.data.synth import synth_market as make

    trx = make(days=60, seed=7, symbol="TRXUSDT")  # same seed → same BTC/ETH candles
    fake.instruments["TRXUSDT"] = Instrument("TRXUSDT", trx[list(OHLCV)])
    progress = Progress(console=Console(file=io.StringIO()))
    summaries = await run(fake, tmp_path, sleeps, symbols=("XRPUSDT", "TRXUSDT"), progress=progress)
    assert [s.symbol for s in summaries] == ["XRPUSDT", "TRXUSDT"]
    assert len(kline_calls(fake, "BTCUSDT")) == 2  # downloaded once, reused for TRX
    assert 5.0 in sleeps.calls  # pause between symbols
    got = load_market(data_path(tmp_path, "TRXUSDT"))
    pd.testing.assert_frame_equal(got[list(OHLCV)], trx.loc[got.index, list(OHLCV)])
    assert all(t.completed == t.total for t in progress.tasks) and len(progress.tasks) == 2


# -- retries -----------------------------------------------------------------------------------


async def test_429_retry_honours_retry_after(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    fake.add_faults(PATH_KLINES, Fault.rate_limited(retry_after=7), Fault.rate_limited(retry_after=7))
    await run(fake, tmp_path, sleeps, options=FetchOptions(days=3, with_oi=False))
    assert sleeps.calls[:2] == [7.0, 7.0]
    assert [r.status for r in fake.calls(PATH_KLINES)][:3] == [429, 429, 200]


async def test_418_then_5xx_use_retry_after_then_exponential_backoff(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    fake.add_faults(
        PATH_FUNDING, Fault.banned(retry_after=3), Fault.server_error(500), Fault.server_error(503)
    )
    await run(fake, tmp_path, sleeps, options=FetchOptions(days=3, with_oi=False))
    assert sleeps.calls == [3.0, 2.0, 4.0]  # Retry-After, then 1 s · 2^(attempt-1)
    assert [r.status for r in fake.calls(PATH_FUNDING)] == [418, 500, 503, 200]


async def test_429_without_retry_after_backs_off(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    fake.add_faults(PATH_TIME, Fault.rate_limited(retry_after=None))
    await run(fake, tmp_path, sleeps, options=FetchOptions(days=3, with_oi=False))
    assert sleeps.calls[0] == 1.0


async def test_dropped_connections_are_retried(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    fake.add_faults(PATH_KLINES, *[Fault.drop()] * 3)
    await run(fake, tmp_path, sleeps, options=FetchOptions(days=3, with_oi=False))
    assert [r.status for r in fake.calls(PATH_KLINES)][:4] == [0, 0, 0, 200]
    assert 1.0 in sleeps.calls  # at least one back-off of ours (aiohttp may retry a reused socket once)
    assert len(load_market(data_path(tmp_path, "XRPUSDT"))) == 3 * 96


async def test_gives_up_after_bounded_attempts(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    fake.add_faults(PATH_KLINES, *[Fault.server_error(502)] * 10)
    with pytest.raises(FetchError) as info:
        await run(fake, tmp_path, sleeps, retry=RetryPolicy(attempts=3))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("klines XRPUSDT: giving up after 3 attempts: HTTP 502")
    assert len(fake.calls(PATH_KLINES)) == 3 and sleeps.calls == [1.0, 2.0]
    assert not data_path(tmp_path, "XRPUSDT").exists()


async def test_long_ban_is_reported_not_waited_out(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    fake.add_faults(PATH_TIME, Fault.banned(retry_after=7200))
    with pytest.raises(FetchError, match=r"HTTP 418 .*wait 7200 s .*try again later"):
        await run(fake, tmp_path, sleeps)
    assert sleeps.calls == [] and len(fake.calls()) == 1


async def test_client_errors_are_not_retried(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder
) -> None:
    fake.add_faults(PATH_KLINES, Fault(400, None, {"code": -1121, "msg": "Invalid symbol."}))
    with pytest.raises(FetchError, match=r"^klines XRPUSDT: HTTP 400 .*Invalid symbol"):
        await run(fake, tmp_path, sleeps)
    assert len(fake.calls(PATH_KLINES)) == 1 and sleeps.calls == []


@pytest.mark.parametrize("symbols", [("ABCUSDT",), ("XRPUSDT", "ZZZUSDT")])
async def test_unknown_symbol_is_a_one_line_error(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder, symbols: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        await run(fake, tmp_path, sleeps, symbols=symbols)
    assert str(info.value).startswith(f"{symbols[-1]}: unknown symbol") and "\n" not in str(info.value)
    assert fake.calls(PATH_KLINES) == []


async def test_unknown_correlation_symbol(fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder) -> None:
    opts = FetchOptions(days=3, correlation=CorrelationMap(btc="BTCUSDT", eth="SOLUSDT"))
    with pytest.raises(ConfigError, match=r"^SOLUSDT: unknown symbol"):
        await run(fake, tmp_path, sleeps, options=opts)


# -- upsert ------------------------------------------------------------------------------------


async def test_upsert_extends_an_older_file_without_a_hole(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder, synth_market: pd.DataFrame
) -> None:
    path = data_path(tmp_path, "XRPUSDT")
    end = fake.now_ms
    fake.now_ms = end - 10 * DAY_MS  # first run, ten days ago
    await run(fake, tmp_path, sleeps, options=FetchOptions(days=5))
    first = load_market(path)
    fake.now_ms = end
    fake.requests.clear()
    (summary,) = await run(fake, tmp_path, sleeps, options=FetchOptions(days=2))
    df = load_market(path)
    # The download started right after the stored file, not two days ago: no gap in between.
    assert int(kline_calls(fake, "XRPUSDT")[0]["startTime"]) == int(first.index.asi8[-1]) + BAR_MS
    assert df.index[0] == first.index[0] and df.index[-1] == synth_market.index[-2]
    assert summary.rows == len(df) == 15 * 96
    pd.testing.assert_frame_equal(df[PRICE_COLS], synth_market.loc[df.index, PRICE_COLS])


async def test_upsert_keeps_stored_micro_values_and_fills_stored_zeros(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder, synth_market: pd.DataFrame
) -> None:
    path = data_path(tmp_path, "XRPUSDT")
    stored = synth_market.iloc[-10 * 96 : -96].copy()
    stored.iloc[-5:, stored.columns.get_loc("funding_rate")] = 0.0  # "unknown" when first recorded
    save_market(stored, path, closed_through_ms=int(stored.index.asi8[-1]))
    await run(fake, tmp_path, sleeps, options=FetchOptions(days=5, with_oi=False))
    df = load_market(path)
    assert df.index.is_unique and len(df) == 10 * 96 - 1  # union, de-duplicated, forming candle left out
    assert df.index[0] == stored.index[0] and df.index[-1] == synth_market.index[-2]
    downloaded_from = int(kline_calls(fake, "XRPUSDT")[0]["startTime"])
    overlap = stored.index[stored.index.asi8 >= downloaded_from]
    assert len(overlap) == 4 * 96 + 1
    # --no-oi downloads zeros, which must not overwrite the stored open-interest changes...
    np.testing.assert_array_equal(df.loc[overlap, "oi_change"], stored.loc[overlap, "oi_change"])
    assert (df.loc[df.index > stored.index[-1], "oi_change"] == 0.0).all()
    # ...while stored zeros are replaced by the downloaded funding rates.
    zeros = stored.index[-5:]
    np.testing.assert_array_equal(df.loc[zeros, "funding_rate"], synth_market.loc[zeros, "funding_rate"])
    assert (df.loc[zeros, "funding_rate"] != 0.0).all()


async def test_existing_file_that_is_corrupt(
    fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder, synth_market: pd.DataFrame
) -> None:
    path = data_path(tmp_path, "XRPUSDT")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 truncated")
    with pytest.raises(DataError, match="unreadable parquet"):
        await run(fake, tmp_path, sleeps, options=FetchOptions(days=2))
    assert path.read_bytes() == b"PAR1 truncated"
    await run(fake, tmp_path, sleeps, options=FetchOptions(days=2, upsert=False))  # --no-upsert overwrites
    assert len(load_market(path)) == 2 * 96


# -- plumbing ----------------------------------------------------------------------------------


def test_base_url_points_every_fapi_endpoint_at_the_server() -> None:
    ex = make_exchange("http://127.0.0.1:9")
    api = ex.urls["api"]
    assert api["fapiPublic"] == "http://127.0.0.1:9/fapi/v1"
    assert api["fapiPublicV2"] == "http://127.0.0.1:9/fapi/v2"
    assert api["fapiData"] == "http://127.0.0.1:9/futures/data"
    assert api["sapi"].startswith("https://api.binance.com")  # untouched, never used


def test_resolve_base_url() -> None:
    assert resolve_base_url(None) == DEFAULT_FAPI_URL
    assert resolve_base_url(None, "http://cfg:1/") == "http://cfg:1"
    assert resolve_base_url("http://flag:2", "http://cfg:1") == "http://flag:2"
    with pytest.raises(ConfigError, match="expected http"):
        resolve_base_url("fapi.binance.com")


async def test_bad_arguments(fake: FakeBinance, tmp_path: Path, sleeps: SleepRecorder) -> None:
    with pytest.raises(ConfigError, match="--days=0"):
        await run(fake, tmp_path, sleeps, options=FetchOptions(days=0))
    with pytest.raises(ConfigError, match="--output needs exactly one symbol"):
        await run(fake, tmp_path, sleeps, symbols=("XRPUSDT", "TRXUSDT"), output=tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="BTCUSDT: is a correlation symbol"):
        await run(fake, tmp_path, sleeps, symbols=("BTCUSDT",))
    assert fake.calls() == []
