"""The backtest's input cache (``backtest.input_cache``) serves exactly what the loader and the
feature builder compute, and is never served stale: a change of the data (even with the same size
and time), of the code or of the rule parameters, or a damaged entry, means a recomputation."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from perpbot.backtest import input_cache
from perpbot.backtest.array_file import BadArrayFile, read_arrays, write_arrays
from perpbot.backtest.prepare import cached_inputs
from perpbot.backtest.runner import BacktestConfig, run_backtest
from perpbot.config import SignalParams, load_config
from perpbot.data.market_arrays import load_market_arrays
from perpbot.data.schema import data_path
from perpbot.data.store import save_market
from perpbot.data.synth import synth_market
from perpbot.ml.features import feature_arrays
from tests.support.data import forbid_recompute

SYM = "XRPUSDT"
PARAMS = SignalParams()
Inputs = tuple[object, dict[str, np.ndarray]]


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("PERPBOT_CACHE_DIR", str(root))
    return root


def _write(root: Path, seed: int, days: int = 20) -> Path:
    frame = synth_market(days, seed, symbol=SYM)
    return save_market(frame, data_path(root, SYM), closed_through_ms=int(frame.index.asi8[-1]))


def _direct(path: Path, params: SignalParams = PARAMS) -> Inputs:
    market = load_market_arrays(path)
    return market, feature_arrays(market, params)


def _assert_same(
    got: tuple[object, dict[str, np.ndarray]], want: tuple[object, dict[str, np.ndarray]]
) -> None:
    (gm, gf), (wm, wf) = got, want
    np.testing.assert_array_equal(gm.open_time_ms, wm.open_time_ms)  # type: ignore[attr-defined]
    assert gm.columns.keys() == wm.columns.keys()  # type: ignore[attr-defined]
    for k, v in wm.columns.items():  # type: ignore[attr-defined]
        assert gm.columns[k].dtype == v.dtype  # type: ignore[attr-defined]
        np.testing.assert_array_equal(gm.columns[k], v)  # type: ignore[attr-defined]
    assert gm.funding_convention == wm.funding_convention  # type: ignore[attr-defined]
    assert gf.keys() == wf.keys()
    for k, v in wf.items():
        assert gf[k].dtype == v.dtype, k
        np.testing.assert_array_equal(gf[k], v)  # NaN == NaN here


def test_a_hit_serves_exactly_what_the_loader_and_feature_builder_compute(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "data", 7)
    want = _direct(path)
    _assert_same(cached_inputs(SYM, tmp_path / "data", PARAMS), want)  # miss: computed and stored
    assert len(list(cache.glob("*.arrays"))) == 1
    forbid_recompute(monkeypatch)
    _assert_same(cached_inputs(SYM, tmp_path / "data", PARAMS), want)  # hit


def test_new_content_with_the_same_size_and_time_is_not_served_stale(cache: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "data", 7)
    cached_inputs(SYM, tmp_path / "data", PARAMS)
    st = path.stat()
    other = _write(tmp_path / "other", 8)
    want = _direct(other)
    shutil.copyfile(other, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    _assert_same(cached_inputs(SYM, tmp_path / "data", PARAMS), want)


def test_the_key_holds_the_content_hash_not_only_size_and_time(cache: Path, tmp_path: Path) -> None:
    path = _write(tmp_path / "data", 7)
    cached_inputs(SYM, tmp_path / "data", PARAMS)
    source = input_cache.describe(path)
    assert source is not None
    assert input_cache.read(cache, source, PARAMS.as_dict()) is not None
    forged = dataclasses.replace(source, sha256="0" * 64)  # same path, size, time and inode
    assert input_cache.read(cache, forged, PARAMS.as_dict()) is None


def test_a_code_change_invalidates_every_entry(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "data", 7)
    cached_inputs(SYM, tmp_path / "data", PARAMS)
    source = input_cache.describe(path)
    assert source is not None
    monkeypatch.setattr(input_cache, "code_version", lambda: "another version of the feature code")
    assert input_cache.read(cache, source, PARAMS.as_dict()) is None


def test_the_code_version_covers_the_feature_and_loader_sources() -> None:
    assert {"ml/features.py", "strategy/indicators.py", "strategy/signal.py", "data/market_arrays.py"} <= set(
        input_cache.CODE_FILES
    )
    pkg = Path(input_cache.__file__).resolve().parents[1]
    assert all((pkg / rel).is_file() for rel in input_cache.CODE_FILES)


def test_other_parameters_recompute_the_features_only(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "data", 7)
    cached_inputs(SYM, tmp_path / "data", PARAMS)
    loose = SignalParams(signal_threshold=2, adx_threshold=0.0, vol_multiplier=1.2)
    want = _direct(path, loose)
    monkeypatch.setattr(
        "perpbot.data.market_arrays.load_market_arrays",
        lambda *_a, **_k: pytest.fail("the market part of the entry was valid"),
    )
    _assert_same(cached_inputs(SYM, tmp_path / "data", loose), want)
    forbid_recompute(monkeypatch)
    _assert_same(cached_inputs(SYM, tmp_path / "data", loose), want)  # stored for the new ones


@pytest.mark.parametrize("damage", ["truncate", "append", "garbage", "empty"])
def test_a_damaged_entry_is_a_miss_and_is_rewritten(cache: Path, tmp_path: Path, damage: str) -> None:
    path = _write(tmp_path / "data", 7)
    cached_inputs(SYM, tmp_path / "data", PARAMS)
    (entry,) = cache.glob("*.arrays")
    raw = entry.read_bytes()
    entry.write_bytes(
        {"truncate": raw[: len(raw) // 2], "append": raw + b"x", "garbage": b"\x00" * 100, "empty": b""}[
            damage
        ]
    )
    _assert_same(cached_inputs(SYM, tmp_path / "data", PARAMS), _direct(path))
    source = input_cache.describe(path)
    assert source is not None and input_cache.read(cache, source, PARAMS.as_dict()) is not None


def test_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERPBOT_CACHE_DIR", "off")
    assert input_cache.cache_root() is None
    path = _write(tmp_path / "data", 7)
    _assert_same(cached_inputs(SYM, tmp_path / "data", PARAMS), _direct(path))


def test_default_folder_follows_xdg() -> None:
    assert input_cache.cache_root({"XDG_CACHE_HOME": "/x"}) == Path("/x/perpbot/inputs")
    assert input_cache.cache_root({"PERPBOT_CACHE_DIR": "/y", "XDG_CACHE_HOME": "/x"}) == Path("/y")
    assert input_cache.cache_root({"PERPBOT_CACHE_DIR": "OFF"}) is None


def test_an_unusable_cache_folder_never_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PERPBOT_CACHE_DIR", str(blocker / "cache"))
    path = _write(tmp_path / "data", 7)
    _assert_same(cached_inputs(SYM, tmp_path / "data", PARAMS), _direct(path))


def test_only_the_most_recently_used_entries_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    for i in range(5):
        f = root / f"{i}.arrays"
        f.write_bytes(b"x")
        os.utime(f, ns=(i * 10**9, i * 10**9))
    input_cache.prune(root, keep=2)
    assert sorted(f.name for f in root.iterdir()) == ["3.arrays", "4.arrays"]


def test_array_file_round_trip_and_refusals(tmp_path: Path) -> None:
    arrays = {
        "t": np.arange(5, dtype=np.int64),
        "f": np.array([1.5, np.nan, -0.0, np.inf, 2.0]),
        "b": np.array([True, False, True, True, False]),
        "i8": np.array([-1, 0, 1, 1, 0], dtype=np.int8),
    }
    f = tmp_path / "x.arrays"
    with open(f, "wb") as fh:
        write_arrays(fh, {"k": [1, "a"]}, arrays)
    meta, got = read_arrays(f)
    assert meta == {"k": [1, "a"]}
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and not got[k].flags.writeable
        np.testing.assert_array_equal(got[k], v)
    raw = f.read_bytes()
    for bad in (raw[:-1], raw + b"\0", b"PBARRAY1" + raw[8:20]):
        f.write_bytes(bad)
        with pytest.raises(BadArrayFile):
            read_arrays(f)


def test_a_backtest_is_the_same_cold_warm_and_without_cache(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    for i, sym in enumerate(("XRPUSDT", "TRXUSDT")):
        frame = synth_market(45, 11 + i, symbol=sym)
        save_market(frame, data_path(data, sym), closed_through_ms=int(frame.index.asi8[-1]))
    env = {
        "SYMBOLS": "XRPUSDT,TRXUSDT",
        "SIGNAL_THRESHOLD": "2",
        "ADX_THRESHOLD": "0",
        "VOL_MULTIPLIER": "1.2",
    }
    app = load_config(environ=env, env_file=None)
    cfg = BacktestConfig(symbols=("XRPUSDT", "TRXUSDT"), data_dir=data, use_ml=False)

    def run() -> tuple[str, int]:
        res = asyncio.run(run_backtest(cfg, app))
        return res.fingerprint, len(res.trades)

    cold = run()
    assert len(list(cache.glob("*.arrays"))) == 2
    warm = run()
    monkeypatch.setenv("PERPBOT_CACHE_DIR", "off")
    assert cold == warm == run()
    assert cold[1] > 0


def test_a_file_is_hashed_again_only_when_it_may_have_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"a" * 100)
    calls = []
    real = input_cache.hashlib.file_digest
    monkeypatch.setattr(input_cache.hashlib, "file_digest", lambda *a: calls.append(1) or real(*a))
    first = input_cache.describe(f)
    assert input_cache.describe(f) == first and len(calls) == 1
    st = f.stat()
    f.write_bytes(b"b" * 100)  # same size, time set back: only the status-change time moved
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = input_cache.describe(f)
    assert len(calls) == 2 and second is not None and first is not None and second.sha256 != first.sha256


def test_a_header_that_does_not_describe_arrays_is_refused(tmp_path: Path) -> None:
    import json
    import struct

    f = tmp_path / "x.arrays"
    for header in ({"meta": {}}, {"meta": {}, "size": "1"}, {"meta": {}, "size": 0, "arrays": [["t"]]}):
        raw = json.dumps(header).encode()
        f.write_bytes(b"PBARRAY1" + struct.pack("<Q", len(raw)) + raw + b"\0" * 64)
        with pytest.raises(BadArrayFile):
            read_arrays(f)


def test_no_cache_when_the_code_cannot_be_keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(input_cache, "code_version", lambda: None)
    assert input_cache.cache_root({"PERPBOT_CACHE_DIR": "/y"}) is None
