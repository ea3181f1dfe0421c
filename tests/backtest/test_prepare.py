"""What a backtest keeps per symbol (backtest.prepare): the same contexts with less memory.

With the skip-ahead only warm signal rows build a context, so only they keep the context values;
every context built from them equals the one built from every row. The window's arrays are copies
(not views keeping a whole file alive), and the run's path from parquet to trades imports no pandas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from perpbot.backtest import runner
from perpbot.backtest.prepare import build_timeline, cached_inputs, market_source, prepare_series
from perpbot.config import AppConfig

from .conftest import LOOSE, SYMS3


def _same_context(a: object, b: object) -> None:
    for f in dataclasses.fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        elif isinstance(x, float) and np.isnan(x):
            assert np.isnan(y)
        else:
            assert x == y, f.name


def test_signal_rows_keep_exactly_the_contexts_of_every_row(markets4: dict[str, pd.DataFrame]) -> None:
    app = AppConfig(symbols=SYMS3, default_params=LOOSE)
    market = markets4["XRPUSDT"]
    start, end = int(market.index.asi8[300]), int(market.index.asi8[-200])
    dense = prepare_series("XRPUSDT", market, app, start, end)
    sparse = prepare_series("XRPUSDT", market, app, start, end, contexts="signals")
    assert dense is not None and sparse is not None
    signal_rows = [i for i in range(dense.n) if dense.ready[i] and dense.side[i] is not None]
    assert len(signal_rows) > 50  # the loose parameters make many
    assert sparse.features.shape == (len(signal_rows), dense.features.shape[1])
    for i in signal_rows:
        _same_context(sparse.context(i), dense.context(i))
    for name in ("open_time_ms", "open", "high", "low", "close", "funding", "ready"):
        np.testing.assert_array_equal(getattr(sparse, name), getattr(dense, name))
    assert sparse.side == dense.side
    hold = next(i for i in range(dense.n) if dense.side[i] is None)
    with pytest.raises(LookupError, match=r"XRPUSDT: row .* has no signal"):
        sparse.context(hold)
    with pytest.raises(ValueError):
        sparse.features[0, 0] = 1.0  # contexts hand out views of a read-only matrix


def test_window_arrays_do_not_keep_the_file_alive(synth_data_dir: Path) -> None:
    app = AppConfig(symbols=SYMS3)
    market = market_source("XRPUSDT", synth_data_dir, None)
    s = prepare_series("XRPUSDT", market, app, None, None, contexts="signals")
    assert s is not None
    for name in ("open_time_ms", "open", "high", "low", "close", "funding"):
        arr = getattr(s, name)
        assert arr.flags.owndata, name  # a copy of the window, not a view of the file's buffer
    np.testing.assert_array_equal(s.close, market.columns["close"])


def test_no_symbol_file_or_features_outlive_its_preparation(
    synth_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[weakref.ref[np.ndarray]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        market, features = cached_inputs(*args, **kwargs)
        loaded.extend(weakref.ref(a) for a in (market.columns["volume"], features["rsi"]))
        return market, features

    alive_at_timeline: list[int] = []

    def timeline(series: Any) -> Any:
        gc.collect()
        alive_at_timeline.append(sum(ref() is not None for ref in loaded))
        return build_timeline(series)

    monkeypatch.setattr(runner, "cached_inputs", spy)
    monkeypatch.setattr(runner, "build_timeline", timeline)
    cfg = runner.BacktestConfig(symbols=SYMS3, data_dir=synth_data_dir, use_ml=False)
    asyncio.run(runner.run_backtest(cfg, AppConfig(symbols=SYMS3)))
    assert len(loaded) == 2 * len(SYMS3)
    assert alive_at_timeline == [0]  # the last symbol's features too (they were kept for the run)


def test_a_files_freed_decode_goes_back_before_its_features(
    synth_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from perpbot.backtest import heap
    from perpbot.ml import features

    calls: list[str] = []
    release, compute = heap.release_free_heap, features.feature_arrays

    def released() -> bool:
        calls.append("release")
        return release()

    def computed(*args: Any, **kwargs: Any) -> Any:
        calls.append("features")
        return compute(*args, **kwargs)

    monkeypatch.setattr(heap, "release_free_heap", released)
    monkeypatch.setattr(features, "feature_arrays", computed)
    monkeypatch.setenv("PERPBOT_CACHE_DIR", "off")
    cached_inputs("XRPUSDT", synth_data_dir, AppConfig(symbols=SYMS3).params_for("XRPUSDT"))
    assert calls == ["release", "features"]


def test_a_backtest_from_files_imports_no_pandas(synth_data_dir: Path) -> None:
    code = (
        "import asyncio, sys; from pathlib import Path\n"
        "from perpbot.backtest.runner import BacktestConfig, run_backtest\n"
        "from perpbot.config import AppConfig\n"
        "syms = ('XRPUSDT', 'TRXUSDT', 'DOGEUSDT')\n"
        f"cfg = BacktestConfig(symbols=syms, data_dir=Path({str(synth_data_dir)!r}), use_ml=False)\n"
        "res = asyncio.run(run_backtest(cfg, AppConfig(symbols=syms)))\n"
        "assert res.stats.candles > 0\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_the_result_carries_the_traded_candles_for_the_charts(markets4: dict[str, pd.DataFrame]) -> None:
    import asyncio

    from perpbot.backtest.runner import BacktestConfig, run_backtest
    from perpbot.backtest.trade_chart import candles_in_window

    markets = {s: markets4[s].iloc[:600] for s in SYMS3}
    cfg = BacktestConfig(symbols=SYMS3, markets=markets, use_ml=False)
    res = asyncio.run(run_backtest(cfg, AppConfig(symbols=SYMS3)))
    assert list(res.candles) == list(SYMS3)
    for sym in SYMS3:
        want = candles_in_window(markets[sym], res.start_ms, res.end_ms)
        got = res.candles[sym]
        for f in dataclasses.fields(want):
            np.testing.assert_array_equal(getattr(got, f.name), getattr(want, f.name))


def test_union_sorted_is_np_unique_of_the_concatenation() -> None:
    from perpbot.backtest.sorted_union import union_sorted

    rng = np.random.default_rng(3)
    cases = [
        [np.arange(10, dtype=np.int64)],
        [np.arange(10, dtype=np.int64), np.arange(10, dtype=np.int64)],
        [np.arange(0, 20, 2, dtype=np.int64), np.arange(5, 15, dtype=np.int64)],
        [np.array([3, 3, 1], dtype=np.int64)],  # not strictly increasing: still deduplicated
        *([rng.integers(-50, 50, rng.integers(1, 40)) for _ in range(3)] for _ in range(20)),
    ]
    for arrays in cases:
        got = union_sorted(arrays)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, np.unique(np.concatenate(arrays)))
