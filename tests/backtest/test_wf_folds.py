"""Running the folds (``wf_folds``): tasks in forked workers, and training from memory that is
the training from a file, bit for bit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest

import perpbot.backtest.wf_folds as wf_folds
from perpbot.backtest.runner import BacktestConfig
from perpbot.backtest.walk_forward import run_walk_forward
from perpbot.backtest.wf_folds import shared_features, train_fold_model
from perpbot.data.schema import data_path
from perpbot.data.store import save_market
from perpbot.ml.training import train_symbol

from .conftest import SYMS3, loose_config


def test_fold_tasks_run_in_worker_processes(
    tmp_path: Path, markets4: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("train_and_trade", "trade_unfiltered"):
        real = getattr(wf_folds, name)

        def spy(job: wf_folds.FoldJob, j: int, *rest: object, _real=real, _name=name) -> object:  # type: ignore[no-untyped-def]
            (tmp_path / f"{_name}{j}.pid").write_text(str(os.getpid()))
            return _real(job, j, *rest)

        monkeypatch.setattr(wf_folds, name, spy)  # forked workers inherit the patched module
    cfg = BacktestConfig(symbols=SYMS3, markets={s: markets4[s] for s in SYMS3})
    wf = run_walk_forward(cfg, loose_config(SYMS3), folds=2, lgbm_overrides={"n_estimators": 5}, workers=2)
    assert [f.index for f in wf.folds] == [1, 2]
    pids = {int(p.read_text()) for p in tmp_path.glob("*.pid")}
    assert len(list(tmp_path.glob("*.pid"))) == 4  # two tasks per fold
    assert os.getpid() not in pids


def _onnx_sha(root: Path, symbol: str) -> str:
    (onnx,) = (root / symbol.lower()).glob("*.onnx")
    return hashlib.sha256(onnx.read_bytes()).hexdigest()


def test_a_fold_model_trained_in_memory_is_the_model_trained_from_its_file(
    tmp_path: Path, markets4: dict[str, pd.DataFrame]
) -> None:
    """The fold trains on a prefix of the loaded market with the prefix of the whole market's
    features; the production path writes that prefix to a file, reads it back and computes its
    features. Same samples, same model, same ONNX bytes."""
    sym, app = "XRPUSDT", loose_config(SYMS3)
    market = markets4[sym]
    test_start = int(market.index.asi8[len(market) * 2 // 3])
    features = shared_features({sym: market}, app)[sym]
    fold = train_fold_model(
        sym, market, test_start, app, tmp_path / "mem", features=features, lgbm_overrides={"n_estimators": 20}
    )
    assert fold.status == "trained"
    cut = int((market.index.asi8 < fold.train_last_ms + 1).sum())  # type: ignore[operator]
    history = market.iloc[:cut]
    path = data_path(tmp_path / "data", sym)
    save_market(history, path, closed_through_ms=int(history.index.asi8[-1]))
    rep = train_symbol(
        sym, data_dir=tmp_path / "data", model_dir=tmp_path / "file", config=app, wf=0,
        lgbm_overrides={"n_estimators": 20},
    )  # fmt: skip
    assert (rep.counts["samples"], float(rep.threshold)) == (fold.samples, fold.threshold)
    assert _onnx_sha(tmp_path / "mem" / "models", sym) == _onnx_sha(tmp_path / "file", sym)


def test_ml_off_runs_the_early_worker_did_not_start_go_to_the_fold_workers(
    markets4: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An instant "import": the early worker is shut down with most ML-off runs not started; they
    # are cancelled there and must run in the fold pool (a cancelled future is never waited on).
    monkeypatch.setattr(wf_folds, "preload_fold_libraries", lambda: None)
    cfg = BacktestConfig(symbols=SYMS3, markets={s: markets4[s] for s in SYMS3})
    fast = {"n_estimators": 5}
    par = run_walk_forward(cfg, loose_config(SYMS3), folds=3, lgbm_overrides=fast, workers=2)
    seq = run_walk_forward(cfg, loose_config(SYMS3), folds=3, lgbm_overrides=fast, workers=1)
    for a, b in zip(par.folds, seq.folds, strict=True):
        assert a.models == b.models
        for mode in ("ml_on", "ml_off"):
            assert a.results[mode].fingerprint == b.results[mode].fingerprint
