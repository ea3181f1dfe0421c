"""The walk-forward end to end (``walk_forward``): purged training before each test window, trades
only inside it, reports written, and the same models, trades and metrics whether the folds ran in
worker processes or one after another here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from perpbot.backtest.runner import BacktestConfig
from perpbot.backtest.walk_forward import run_walk_forward
from perpbot.data.schema import BAR_MS
from perpbot.ml.splits import EMBARGO

from .conftest import SYMS3, loose_config, risk_violations


def test_walk_forward_trains_before_each_window_and_trades_inside_it(
    tmp_path: Path, markets4: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = BacktestConfig(symbols=SYMS3, markets={s: markets4[s] for s in SYMS3})
    wf = run_walk_forward(
        cfg, loose_config(SYMS3), folds=2, out_dir=tmp_path / "wf", lgbm_overrides={"n_estimators": 25}
    )
    assert [f.index for f in wf.folds] == [1, 2]
    trained = 0
    for f in wf.folds:
        for m in f.models.values():
            if m.status == "trained":
                trained += 1
                # Purged: the last training candle is ≥ EMBARGO + 1 bars before the test window, and
                # the dataset drops the last LOOKAHEAD bars, so no label reaches the test window.
                assert m.train_last_ms is not None
                assert m.train_last_ms <= f.test_start_ms - (EMBARGO + 1) * BAR_MS
        assert f.results["ml_on"].in_sample == {}  # the fold models never saw the test window
        for mode in ("ml_on", "ml_off"):
            r = f.results[mode]
            assert all(
                f.test_start_ms <= t.entry_time_ms and t.exit_time_ms <= f.test_end_ms for t in r.trades
            )
            assert not risk_violations(r.trades)
    assert trained >= 3
    assert wf.metrics["ml_on"].fingerprint != wf.metrics["ml_off"].fingerprint
    assert len(wf.trades["ml_off"]) == sum(len(f.results["ml_off"].trades) for f in wf.folds)
    doc = json.loads((tmp_path / "wf" / "walk_forward.json").read_text())
    assert doc["total"]["ml_on"]["fingerprint"] == wf.metrics["ml_on"].fingerprint
    assert (tmp_path / "wf" / "ml_on" / "equity.png").is_file()
    assert not (tmp_path / "models").exists()
    # Deterministic, training included: the folds ran in parallel processes above; one after
    # another in this process they give the very same models, trades and metrics.
    again = run_walk_forward(
        cfg, loose_config(SYMS3), folds=2, lgbm_overrides={"n_estimators": 25}, workers=1
    )
    assert {m: r.fingerprint for m, r in again.metrics.items()} == {
        m: r.fingerprint for m, r in wf.metrics.items()
    }
    for seq, par in zip(again.folds, wf.folds, strict=True):
        assert seq.models == par.models and seq.filter_stats == par.filter_stats
        for mode in ("ml_on", "ml_off"):
            assert seq.results[mode].trades == par.results[mode].trades
            assert seq.results[mode].title == par.results[mode].title
            assert seq.results[mode].final_balance == par.results[mode].final_balance
            timing = {"seconds_prepare": 0.0, "seconds_loop": 0.0}
            assert dataclasses.replace(seq.results[mode].stats, **timing) == dataclasses.replace(
                par.results[mode].stats, **timing
            )
