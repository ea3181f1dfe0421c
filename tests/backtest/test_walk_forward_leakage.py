"""Walk-forward backtest leakage guards, checked from what each fold's model says about itself.

For every fold and symbol the model that traded test window ``[a, b)`` is opened through the
filter the ML-on run actually used; its saved metadata (``training_window``, the number of bars
it was given, its sample count) is cross-checked against a dataset rebuilt from that prefix of
the market, and every label window plus the embargo must end before ``a``. The same check is run
on a deliberately leaking walk-forward (training allowed into the test window) and must fail.
Also: ML on/off trade exactly the same candles; no model is shared between folds or taken from
the user's ``models/`` folder; the IN-SAMPLE warning of ``run_backtest`` fires exactly when a
model's training labels overlap the backtest window.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import perpbot.ml.splits as splits
from perpbot.backtest.runner import BacktestConfig, BacktestResult, run_backtest
from perpbot.backtest.walk_forward import WalkForwardResult, run_walk_forward
from perpbot.config import AppConfig
from perpbot.data.schema import BAR_MS, data_path
from perpbot.data.store import save_market
from perpbot.ml.dataset import build_dataset
from perpbot.ml.labels import LOOKAHEAD
from perpbot.ml.splits import EMBARGO
from perpbot.ml.training import NEGATIVE_RATIO, train_symbol
from tests.backtest.conftest import loose_config

SYMS = ("XRPUSDT", "TRXUSDT")
FAST = {"n_estimators": 20}
GAP_MS = (LOOKAHEAD + EMBARGO) * BAR_MS


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def fold_leaks(wf: WalkForwardResult, markets: dict[str, pd.DataFrame], app: AppConfig) -> list[str]:
    """Every way a fold's model could have seen its test window (empty list: none)."""
    out: list[str] = []
    for f in wf.folds:
        a = f.test_start_ms
        for sym in wf.symbols:
            filt = f.results["ml_on"].config.entry_filters[sym]  # type: ignore[index]
            if not filt.has_model:
                if f.models[sym].status == "trained":
                    out.append(f"fold {f.index} {sym}: trained model not used")
                continue
            meta: dict[str, Any] = filt.metadata
            where = f"fold {f.index} {sym}"
            last = _ms(meta["training_window"]["end"])
            if last + GAP_MS >= a:
                out.append(f"{where}: last sample's label window + embargo reaches the test window")
            # The data the model was given: the first `bars` candles of the symbol.
            n_bars = int(meta["training_window_detail"]["bars"])
            hist = markets[sym].iloc[:n_bars]
            if int(hist.index.as_unit("ms").asi8[-1]) + EMBARGO * BAR_MS >= a:
                out.append(f"{where}: training candles reach into the embargo or the test window")
            d = build_dataset(hist, app.params_for(sym), negative_ratio=NEGATIVE_RATIO, symbol=sym)
            if (
                len(d) != meta["n_samples"]
                or int(d.time_ms[-1]) != last
                or int(d.time_ms[0]) != _ms(meta["training_window"]["start"])
            ):
                out.append(f"{where}: metadata does not describe the data prefix it names")
            if int(d.label_end_time_ms.max()) + EMBARGO * BAR_MS >= a:
                out.append(f"{where}: a training label (+ embargo) reaches the test window")
            if f.results["ml_on"].in_sample:
                out.append(f"{where}: run_backtest flagged the fold as in-sample")
    return out


def _run(markets: dict[str, pd.DataFrame], model_dir: Path, k: int = 2) -> WalkForwardResult:
    cfg = BacktestConfig(symbols=SYMS, markets={s: markets[s] for s in SYMS}, model_dir=model_dir)
    return run_walk_forward(cfg, loose_config(SYMS), folds=k, lgbm_overrides=FAST)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_walk_forward_folds_are_out_of_sample_isolated_and_compare_the_same_candles(
    tmp_path: Path, markets4: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = loose_config(SYMS)
    # A decoy in the user's models/ folder, trained on everything (it would be in-sample).
    user_models = tmp_path / "models"
    for s in SYMS:
        save_market(
            markets4[s], data_path(tmp_path / "data", s), closed_through_ms=int(markets4[s].index.asi8[-1])
        )
        train_symbol(
            s, data_dir=tmp_path / "data", model_dir=user_models, config=app, wf=0, lgbm_overrides=FAST
        )
    decoy = {p: _sha(p) for p in sorted(user_models.rglob("*")) if p.is_file()}

    wf = _run(markets4, user_models)
    assert fold_leaks(wf, markets4, app) == []

    used: dict[str, list[str]] = {s: [] for s in SYMS}
    dirs: set[Path] = set()
    for f in wf.folds:
        on, off = f.results["ml_on"], f.results["ml_off"]
        # ML on and ML off: exactly the same candles, inside the fold's window.
        np.testing.assert_array_equal(on.close_time_ms, off.close_time_ms)
        assert (on.start_ms, on.end_ms, on.stats.candles) == (off.start_ms, off.end_ms, off.stats.candles)
        assert on.start_ms == f.test_start_ms and on.end_ms <= f.test_end_ms
        for s in SYMS:
            filt = on.config.entry_filters[s]  # type: ignore[index]
            assert filt.has_model, f.models[s].status
            d = Path(filt.model_dir).resolve()
            assert user_models.resolve() not in d.parents  # never the user's models/
            dirs.add(d)
            used[s].append(filt.metadata["onnx_sha256"])
    assert len(dirs) == len(wf.folds) * len(SYMS)  # one folder per fold and symbol
    decoy_onnx = {v for p, v in decoy.items() if p.suffix == ".onnx"}
    for s in SYMS:
        assert len(set(used[s])) == len(wf.folds)  # no fold reuses another fold's model
        assert not decoy_onnx & set(used[s])
    assert {p: _sha(p) for p in sorted(user_models.rglob("*")) if p.is_file()} == decoy  # untouched
    # The folds tile the tested span without overlap.
    for f, g in zip(wf.folds, wf.folds[1:], strict=False):
        assert f.test_end_ms == g.test_start_ms


def test_leak_check_catches_a_model_trained_with_the_test_window(
    tmp_path: Path, markets4: dict[str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # Injected leak: a negative embargo lets each fold train 300 bars into its own test window.
    monkeypatch.setattr(splits, "EMBARGO", -300)
    wf = _run(markets4, tmp_path / "models", k=1)
    leaks = fold_leaks(wf, markets4, loose_config(SYMS))
    for s in SYMS:
        assert f"fold 1 {s}: a training label (+ embargo) reaches the test window" in leaks
        assert f"fold 1 {s}: training candles reach into the embargo or the test window" in leaks
    assert set(wf.folds[0].results["ml_on"].in_sample) == set(SYMS)  # the runner warns as well


# --------------------------------------------------------------------------- IN-SAMPLE warning


@pytest.fixture(scope="module")
def trained_prefix(
    tmp_path_factory: pytest.TempPathFactory, markets4: dict[str, pd.DataFrame]
) -> tuple[Path, dict[str, Any]]:
    """XRPUSDT trained on its first 2000 candles; returns the models root and the metadata."""
    root = tmp_path_factory.mktemp("in_sample")
    hist = markets4["XRPUSDT"].iloc[:2000]
    save_market(hist, data_path(root / "data", "XRPUSDT"), closed_through_ms=int(hist.index.asi8[-1]))
    train_symbol(
        "XRPUSDT",
        data_dir=root / "data",
        model_dir=root / "models",
        config=loose_config(["XRPUSDT"]),
        wf=0,
        lgbm_overrides=FAST,
    )
    meta = json.loads((root / "models" / "xrpusdt" / "lgbm_filter.json").read_text())
    return root / "models", meta


def _window_run(models: Path, market: pd.DataFrame, start_ms: int, end_ms: int) -> BacktestResult:
    from perpbot.ml.filter import MLFilter

    # Trained with wf=0, the model carries a failed deploy gate ("not validated"); this test is
    # about the in-sample warning, so the filter is told to serve it anyway (ML_ALLOW_UNGATED).
    served = MLFilter(models / "xrpusdt", backends=("lgbm",), hot_reload=False, allow_ungated=True)
    cfg = BacktestConfig(
        symbols=("XRPUSDT",),
        markets={"XRPUSDT": market},
        entry_filters={"XRPUSDT": served},
        model_dir=models,
        start=_dt(start_ms),
        end=_dt(end_ms),
    )
    return asyncio.run(run_backtest(cfg, loose_config(["XRPUSDT"])))


DAY = 96 * BAR_MS


@pytest.mark.parametrize(
    ("anchor", "start_bars", "end_bars", "fires"),
    [
        ("last", LOOKAHEAD, LOOKAHEAD + 96, True),  # the last label bar is the window's first candle
        ("last", LOOKAHEAD + 1, LOOKAHEAD + 97, False),  # first candle after every label
        ("last", -96, 96, True),  # straddles the end of training
        ("first", 96, 192, True),  # inside the training window
        ("first", -96, 0, False),  # ends right before the first sample
        ("first", -96, 1, True),  # contains the first sample
    ],
)
def test_in_sample_warning_fires_exactly_on_overlap(
    trained_prefix: tuple[Path, dict[str, Any]],
    markets4: dict[str, pd.DataFrame],
    anchor: str,
    start_bars: int,
    end_bars: int,
    fires: bool,
) -> None:
    models, meta = trained_prefix
    t = _ms(meta["training_window"]["end" if anchor == "last" else "start"])
    r = _window_run(models, markets4["XRPUSDT"], t + start_bars * BAR_MS, t + end_bars * BAR_MS)
    assert r.models["XRPUSDT"] is not None  # the model was loaded
    assert ("XRPUSDT" in r.in_sample) is fires
    assert any("IN-SAMPLE" in n for n in r.notes()) is fires
