"""Purged / embargoed walk-forward (SPEC §5, §13 row 23, §14 "Later: walk-forward folds")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from perpbot.ml.splits import Fold, holdout_tail, purged_walk_forward

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LOOKAHEAD = 24
EMBARGO = 24


def _check_fold(bars: np.ndarray, fold: Fold, lookahead: int = LOOKAHEAD, embargo: int = EMBARGO) -> None:
    tr, es, va = fold.train_idx, fold.es_idx, fold.val_idx
    assert tr.size and va.size
    assert not (set(tr) & set(es)) and not (set(tr) & set(va)) and not (set(es) & set(va))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    # Purge + embargo: every label window of training and ES samples ends embargo bars before validation.
    v0 = bars[va].min()
    assert bars[tr].max() + lookahead + embargo < v0
    if es.size:
        assert bars[es].max() + lookahead + embargo < v0
        # the fit part is purged against the early-stopping slice as well
        assert bars[tr].max() + lookahead + embargo < bars[es].min()


def _sparse_bars(n_bars: int, n_samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(np.arange(60, n_bars), size=n_samples, replace=False)).astype(np.int64)


def test_spec_fold_geometry_without_purge() -> None:
    bars = np.arange(0, 1000 * 100, 100)  # samples 100 bars apart: purge removes nothing
    folds = purged_walk_forward(bars, n_folds=5, train_ratio=0.6, es_fraction=0.0)
    assert [f.index for f in folds] == [0, 1, 2, 3, 4]
    for f, fold in enumerate(folds):
        start = 600 + f * 80
        assert fold.val_idx[0] == start and fold.val_idx.size == 80
        np.testing.assert_array_equal(fold.train_idx, np.arange(start))  # expanding window
        assert fold.es_idx.size == 0


def test_purge_and_embargo_on_dense_synthetic_samples() -> None:
    bars = np.arange(5000, dtype=np.int64)  # every bar a sample: purge must remove 48 bars per fold
    folds = purged_walk_forward(bars, n_folds=5)
    assert len(folds) == 5
    for fold in folds:
        _check_fold(bars, fold)
        v0 = bars[fold.val_idx[0]]
        # tightest allowed: the purge removes exactly what it must, not more
        assert bars[fold.es_idx].max() == v0 - LOOKAHEAD - EMBARGO - 1


def test_purge_on_sparse_synthetic_samples() -> None:
    bars = _sparse_bars(40_000, 1500)
    for fold in purged_walk_forward(bars, n_folds=5, lookahead=24, embargo=24):
        _check_fold(bars, fold)


def test_unpurged_split_would_fail_the_check() -> None:
    """Guard the guard: the check itself detects a leak when purging is switched off."""
    bars = np.arange(2000, dtype=np.int64)
    fold = purged_walk_forward(bars, n_folds=3, lookahead=0, embargo=0, es_fraction=0.0)[0]
    with pytest.raises(AssertionError):
        _check_fold(bars, fold)


def test_holdout_tail_is_purged() -> None:
    bars = np.arange(3000, dtype=np.int64)
    fit, tail = holdout_tail(bars, fraction=0.15)
    assert tail.size == 450 and tail[-1] == 2999
    assert bars[fit].max() + LOOKAHEAD + EMBARGO < bars[tail].min()


def test_accepts_dataset_like_and_rejects_unsorted() -> None:
    class Obj:
        bar_index = np.arange(0, 5000, 5)

    assert len(purged_walk_forward(Obj(), n_folds=4)) == 4
    with pytest.raises(ValueError):
        purged_walk_forward(np.array([3, 2, 1]))


def _real_files() -> list[Path]:
    return sorted(REAL_DATA.glob("*/combined_15m.parquet")) if REAL_DATA.is_dir() else []


@pytest.mark.realdata
@pytest.mark.skipif(not _real_files(), reason="../shared/data not present")
@pytest.mark.parametrize("path", _real_files(), ids=lambda p: p.parent.name)
def test_purge_on_real_timestamps(path: Path) -> None:
    """On the real candles and the real dataset: validation starts ≥ 24 bars after the last
    training (and early-stopping) label window ends, measured in wall-clock time."""
    from perpbot.config import SignalParams
    from perpbot.data.store import load_market
    from perpbot.ml.dataset import build_dataset

    market = load_market(path)
    ds = build_dataset(market, SignalParams(), negative_ratio=3, decay=0.0, symbol=path.parent.name)
    bar_ms = 15 * 60_000
    t = ds.time_ms
    label_end_t = ds.label_end_time_ms
    # real timestamps are gap-free, so bar arithmetic and time arithmetic agree
    np.testing.assert_array_equal(label_end_t - t, LOOKAHEAD * bar_ms)
    folds = purged_walk_forward(ds.bar_index, n_folds=5, lookahead=LOOKAHEAD, embargo=EMBARGO)
    assert len(folds) == 5
    for fold in folds:
        used = np.concatenate([fold.train_idx, fold.es_idx])
        assert t[fold.val_idx].min() >= label_end_t[used].max() + EMBARGO * bar_ms
        assert t[fold.es_idx].min() >= label_end_t[fold.train_idx].max() + EMBARGO * bar_ms
        _check_fold(ds.bar_index, fold)
