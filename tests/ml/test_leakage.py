"""Information-leakage and optimistic-evaluation guards of the ML pipeline.

Each guarantee is checked from the outside — perturb what must not matter, or inspect the rows a
model was actually fit / stopped / thresholded on — rather than by trusting the code's own
variables, and each check is shown to *catch* a deliberately injected leak (monkeypatched into
the pipeline), so a passing test means something:

* features of row t read rows ≤ t only (the truncation check catches a bfill and a shifted return);
* the label of row t reads bars t+1 … t+24 only; the dataset never samples the last 24 bars and a
  truncated history yields exactly the full history's samples before the cut;
* per fold: the fit rows and early-stopping rows are purged + embargoed against validation,
  validation labels influence neither the model nor its threshold, metrics are on signal rows
  only, undersampling touches the training part only, the NN normaliser sees fit rows only;
* the final model's threshold tail is purged from its fit rows and the threshold is chosen there;
* tuning fits on purged folds only; promotion follows the stated rule; ``--no-baseline`` never
  promotes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_recall_curve, roc_auc_score

from perpbot.config import AppConfig
from perpbot.data.schema import BAR_MS, data_path
from perpbot.data.store import load_market
from perpbot.data.synth import synth_market
from perpbot.ml import features as feat
from perpbot.ml import fold_evaluation, promotion, training, tuning, tuning_cv
from perpbot.ml.dataset import SOURCE_SIGNAL, Dataset, build_dataset
from perpbot.ml.evaluation import positive_proba
from perpbot.ml.fold_evaluation import evaluate_fold
from perpbot.ml.labels import LOOKAHEAD, barrier_labels
from perpbot.ml.lgbm_params import ACTIVE_PARAMS_FILE, ResolvedParams, default_resolved_params
from perpbot.ml.nn_model import Normalizer
from perpbot.ml.splits import EMBARGO, Fold, purged_walk_forward
from perpbot.ml.training import NEGATIVE_RATIO, train_symbol
from tests.support.ml import LOOSE, write_market

CFG = AppConfig(default_params=LOOSE)
FAST = {"n_estimators": 60}
GAP = LOOKAHEAD + EMBARGO  # a kept earlier sample i satisfies  i + GAP < first later bar


# --------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture(scope="module")
def market() -> pd.DataFrame:
    return synth_market(20, 11, symbol="LEAKUSDT")


@pytest.fixture(scope="module")
def ds(market: pd.DataFrame) -> Dataset:
    return build_dataset(market, LOOSE, negative_ratio=NEGATIVE_RATIO, decay=2.0, symbol="LEAKUSDT")


@pytest.fixture(scope="module")
def folds(ds: Dataset) -> list[Fold]:
    out = purged_walk_forward(ds.bar_index, n_folds=3)
    assert len(out) == 3
    return out


def purge_violations(ds: Dataset, earlier: np.ndarray, first_later_bar: int) -> int:
    """Samples of ``earlier`` whose label window plus embargo reaches ``first_later_bar``."""
    return int(np.sum(ds.bar_index[np.asarray(earlier, dtype=np.int64)] + GAP >= first_later_bar))


def isolation_problems(ds: Dataset, fold: Fold, fit_idx: np.ndarray, es_idx: np.ndarray) -> list[str]:
    """What is wrong with fitting on ``fit_idx`` and stopping on ``es_idx`` for ``fold`` (empty: fine)."""
    val0 = int(ds.bar_index[fold.val_idx].min())
    out = []
    if np.intersect1d(es_idx, fold.val_idx).size or np.intersect1d(fit_idx, fold.val_idx).size:
        out.append("validation rows used for fitting or early stopping")
    if not np.isin(fit_idx, fold.train_idx).all():
        out.append("fit rows outside the fold's training part")
    if purge_violations(ds, fit_idx, val0):
        out.append("fit labels reach the validation period")
    if es_idx.size and purge_violations(ds, es_idx, val0):
        out.append("early-stopping labels reach the validation period")
    if es_idx.size and purge_violations(ds, fit_idx, int(ds.bar_index[es_idx].min())):
        out.append("fit labels reach the early-stopping slice")
    return out


class FitSpy:
    """Wraps ``fit_backend``: records the rows each model was fit and stopped on, and the model."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.calls: list[tuple[np.ndarray, np.ndarray, Any]] = []

    def __call__(self, backend: str, ds: Dataset, fit_idx: np.ndarray, es_idx: np.ndarray, **kw: Any) -> Any:
        model = self.real(backend, ds, fit_idx, es_idx, **kw)
        self.calls.append((np.array(fit_idx), np.array(es_idx), model))
        return model


def run_fold(
    monkeypatch: pytest.MonkeyPatch, ds: Dataset, fold: Fold, backend: str = "lgbm", **kw: Any
) -> tuple[training.FoldMetrics, np.ndarray, np.ndarray, Any]:
    spy = FitSpy(fold_evaluation.fit_backend)
    monkeypatch.setattr(fold_evaluation, "fit_backend", spy)
    lgbm = ResolvedParams({**default_resolved_params().params, **FAST}, 1.0, "test")
    fm = evaluate_fold(backend, ds, fold, lgbm=lgbm, config_threshold=0.5, **kw)
    monkeypatch.setattr(fold_evaluation, "fit_backend", spy.real)
    (fit_idx, es_idx, model), *_ = spy.calls
    return fm, fit_idx, es_idx, model


def flipped(ds: Dataset, idx: np.ndarray) -> Dataset:
    y = ds.y.copy()
    y[idx] = 1 - y[idx]
    return dataclasses.replace(ds, y=y)


def val_label_influence(
    monkeypatch: pytest.MonkeyPatch, ds: Dataset, fold: Fold
) -> tuple[float, bool, training.FoldMetrics, training.FoldMetrics]:
    """Fit the fold twice, once with the validation signal labels flipped. Returns the largest
    prediction change, whether the threshold changed, and both fold reports."""
    val_sig = fold.val_idx[ds.is_signal[fold.val_idx]]
    a, *_, ma = run_fold(monkeypatch, ds, fold)
    b, *_, mb = run_fold(monkeypatch, flipped(ds, val_sig), fold)
    dp = float(np.max(np.abs(positive_proba(ma, ds.X) - positive_proba(mb, ds.X))))
    return dp, (a.threshold, a.threshold_fallback) != (b.threshold, b.threshold_fallback), a, b


# --------------------------------------------------------------------------- 3. features


def lookahead_rows(market: pd.DataFrame, ts: list[int]) -> list[int]:
    """Rows t whose features differ when the market is cut right after t (i.e. read bar > t)."""
    full = feat.build_feature_frame(market, LOOSE).to_numpy(np.float64)
    bad = []
    for t in ts:
        cut = feat.build_feature_frame(market.iloc[: t + 1], LOOSE).iloc[-1].to_numpy(np.float64)
        if not np.array_equal(cut, full[t], equal_nan=True):
            bad.append(t)
    return bad


@pytest.fixture(scope="module")
def sparse_market(market: pd.DataFrame) -> pd.DataFrame:
    """Funding known only at its 8-hourly settlements: a backward fill would leak."""
    m = market.copy()
    settle = (m.index.hour % 8 == 0) & (m.index.minute == 0)
    m.loc[~settle, "funding_rate"] = np.nan
    return m


TS = [70, 333, 700, 1201, 1850]


def _bfill(x: np.ndarray) -> np.ndarray:
    return pd.Series(x).bfill().ffill().to_numpy()


def _peek_return(real: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda close, lag: real(np.append(close[1:], close[-1]), lag)  # reads close[t+1]


def test_features_of_row_t_read_no_later_row(sparse_market: pd.DataFrame) -> None:
    assert lookahead_rows(sparse_market, TS) == []


@pytest.mark.parametrize("leak", ["bfill_funding", "return_reads_next_close"])
def test_the_truncation_check_catches_an_injected_feature_leak(
    sparse_market: pd.DataFrame, monkeypatch: pytest.MonkeyPatch, leak: str
) -> None:
    if leak == "bfill_funding":
        monkeypatch.setattr(feat, "ffill", _bfill)
    else:
        monkeypatch.setattr(feat, "pct_change_filled", _peek_return(feat.pct_change_filled))
    assert len(lookahead_rows(sparse_market, TS)) >= len(TS) - 1


# --------------------------------------------------------------------------- 3. labels / dataset


def test_label_of_row_t_reads_bars_t_plus_1_to_t_plus_lookahead_only() -> None:
    n = 200
    close = np.full(n, 100.0)
    high, low, atr = close + 0.1, close - 0.1, np.ones(n)  # barriers ±1.5 / ±2.0: all timeouts
    for t, side in ((60, 1), (90, -1)):
        sides = np.zeros(n, dtype=np.int8)
        sides[t] = side
        base = barrier_labels(high, low, close, atr, sides, 1.5, 2.0)
        assert base[t] == 0.0
        for k in range(-3, LOOKAHEAD + 4):
            h, lo = high.copy(), low.copy()
            if side > 0:
                h[t + k] = 1e6  # a target hit, if this bar were read
            else:
                lo[t + k] = -1e6
            got = barrier_labels(h, lo, close, atr, sides, 1.5, 2.0)[t]
            assert got == (1.0 if 1 <= k <= LOOKAHEAD else 0.0), (t, side, k)


def test_dataset_excludes_the_last_lookahead_bars_and_truncation_keeps_every_label(
    market: pd.DataFrame, ds: Dataset
) -> None:
    assert ds.bar_index.max() < ds.n_bars - LOOKAHEAD  # HOLD negatives included
    full = build_dataset(market, LOOSE, negative_ratio=0, decay=0.0, min_samples=1)
    for m in (700, 1111, 1500):
        cut = build_dataset(market.iloc[:m], LOOSE, negative_ratio=0, decay=0.0, min_samples=1)
        assert cut.bar_index.max() < m - LOOKAHEAD
        # Exactly the full history's samples whose label window ends before the cut, same labels
        # and features: nothing after bar m - 1 was needed, nothing labelable was dropped.
        expected = full.bar_index < m - LOOKAHEAD
        np.testing.assert_array_equal(cut.bar_index, full.bar_index[expected])
        np.testing.assert_array_equal(cut.y, full.y[expected])
        np.testing.assert_array_equal(cut.X, full.X[expected])


# --------------------------------------------------------------------------- 2. fold training


def test_fold_fit_and_early_stopping_rows_are_purged_against_validation(
    ds: Dataset, folds: list[Fold], monkeypatch: pytest.MonkeyPatch
) -> None:
    for fold in folds:
        # The splitter's output itself is purged ...
        assert isolation_problems(ds, fold, fold.train_idx, fold.es_idx) == []
        # ... and so are the rows evaluate_fold actually hands to the fit.
        _, fit_idx, es_idx, _ = run_fold(monkeypatch, ds, fold)
        assert es_idx.size > 0 and isolation_problems(ds, fold, fit_idx, es_idx) == []
        assert np.isin(es_idx, fold.es_idx).all()


def test_isolation_check_catches_early_stopping_on_the_validation_slice(
    ds: Dataset, folds: list[Fold], monkeypatch: pytest.MonkeyPatch
) -> None:
    fold = folds[0]
    val_sig = fold.val_idx[ds.is_signal[fold.val_idx]]
    monkeypatch.setattr(fold_evaluation, "es_rows", lambda _ds, _idx: val_sig)  # the injected leak
    _, fit_idx, es_idx, _ = run_fold(monkeypatch, ds, fold)
    assert "validation rows used for fitting or early stopping" in isolation_problems(
        ds, fold, fit_idx, es_idx
    )


def test_validation_labels_influence_neither_model_nor_threshold(
    ds: Dataset, folds: list[Fold], monkeypatch: pytest.MonkeyPatch
) -> None:
    for fold in folds:
        dp, thr_changed, a, b = val_label_influence(monkeypatch, ds, fold)
        assert dp == 0.0 and not thr_changed, (fold.index, dp)
        assert a.n_val_positives + b.n_val_positives == a.n_val_signals  # the flip did happen
        assert b.auc == pytest.approx(1.0 - a.auc)  # and reached the reported metric


def test_label_flip_check_catches_stopping_and_threshold_on_validation(
    ds: Dataset, folds: list[Fold], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = folds[1]
    # Injected leak: the fold's early-stopping/threshold slice *is* its validation slice.
    leaky = Fold(f.index, f.train_idx, f.val_idx, f.val_idx)
    dp, thr_changed, *_ = val_label_influence(monkeypatch, ds, leaky)
    assert dp > 0.0 and thr_changed


class StubModel:
    """A fixed scorer, so fold metrics can be recomputed by hand."""

    def __init__(self) -> None:
        self.v = np.random.default_rng(5).normal(size=len(feat.FEATURE_COLS))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-np.nan_to_num(np.asarray(X, dtype=np.float64)) @ self.v / 5.0))
        return np.column_stack([1.0 - p, p])


def _hold_rows_scrambled(ds: Dataset, idx: np.ndarray) -> Dataset:
    hold = idx[ds.source[idx] != SOURCE_SIGNAL]  # not via is_signal: a test patches it
    y, X = ds.y.copy(), ds.X.copy()
    y[hold] = 1
    X[hold] = np.random.default_rng(1).normal(size=X[hold].shape) * 50
    return dataclasses.replace(ds, y=y, X=X)


def _stub_metrics(ds: Dataset, fold: Fold, monkeypatch: pytest.MonkeyPatch) -> training.FoldMetrics:
    monkeypatch.setattr(fold_evaluation, "fit_backend", lambda *a, **k: StubModel())
    return evaluate_fold("lgbm", ds, fold, lgbm=None, config_threshold=0.5)


def test_fold_metrics_are_computed_on_validation_signal_rows_only(
    ds: Dataset, folds: list[Fold], monkeypatch: pytest.MonkeyPatch
) -> None:
    for fold in folds:
        fm = _stub_metrics(ds, fold, monkeypatch)
        val = fold.val_idx[ds.is_signal[fold.val_idx]]
        p = StubModel().predict_proba(ds.X[val])[:, 1]
        assert fm.n_val_signals == val.size < fold.val_idx.size
        assert fm.auc == pytest.approx(roc_auc_score(ds.y[val], p))
        acc = p >= fm.threshold
        assert fm.precision == pytest.approx(ds.y[val][acc].mean() if acc.any() else 0.0)
        # HOLD rows of the validation slice (labels and features) do not matter at all.
        assert _stub_metrics(_hold_rows_scrambled(ds, fold.val_idx), fold, monkeypatch) == fm


def test_signal_only_check_catches_metrics_on_every_row(
    ds: Dataset, folds: list[Fold], monkeypatch: pytest.MonkeyPatch
) -> None:
    fold = folds[0]
    monkeypatch.setattr(Dataset, "is_signal", property(lambda self: np.ones(len(self.y), bool)))
    assert _stub_metrics(_hold_rows_scrambled(ds, fold.val_idx), fold, monkeypatch) != _stub_metrics(
        ds, fold, monkeypatch
    )


def test_undersampling_touches_the_training_part_only(
    ds: Dataset, folds: list[Fold], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[np.ndarray] = []
    real = fold_evaluation.stratified_undersample

    def spy(y: np.ndarray, source: np.ndarray, seed: int = 42) -> np.ndarray:
        seen.append(np.array(y))
        return real(y, source, seed=seed)

    monkeypatch.setattr(fold_evaluation, "stratified_undersample", spy)
    for fold in folds:
        seen.clear()
        fm, fit_idx, es_idx, _ = run_fold(monkeypatch, ds, fold)
        assert len(seen) == 1 and np.array_equal(seen[0], ds.y[fold.train_idx])
        assert np.isin(fit_idx, fold.train_idx).all() and fit_idx.size < fold.train_idx.size
        # Early stopping and validation keep their natural class mix: every signal row is there.
        es_sig = fold.es_idx[ds.is_signal[fold.es_idx]]
        assert np.array_equal(es_idx, fold_evaluation.es_rows(ds, fold.es_idx))
        assert es_idx.size >= es_sig.size
        assert fm.n_val_signals == int(ds.is_signal[fold.val_idx].sum())


def test_nn_normaliser_is_computed_on_fit_rows_only(
    ds: Dataset, folds: list[Fold], monkeypatch: pytest.MonkeyPatch
) -> None:
    fold = folds[1]
    nn = {"epochs": 1, "hidden_dim": 8}
    _, fit_idx, _, model = run_fold(monkeypatch, ds, fold, backend="nn", nn_options=nn)
    ref = Normalizer.fit(ds.X[fit_idx])
    np.testing.assert_array_equal(model.norm.mean, ref.mean)
    np.testing.assert_array_equal(model.norm.std, ref.std)
    # Meaningful: statistics over training + validation would differ.
    wider = Normalizer.fit(ds.X[np.concatenate([fit_idx, fold.val_idx])])
    assert not np.allclose(wider.mean, ref.mean)
    # Black box: blowing up every row the model is not fit on (ES slice, validation, rest of the
    # training part) leaves the normaliser unchanged.
    X = ds.X.copy()
    others = np.setdiff1d(np.arange(len(ds)), fit_idx)
    X[others] = X[others] * 1000.0 + 7.0
    _, fit2, _, model2 = run_fold(
        monkeypatch, dataclasses.replace(ds, X=X), fold, backend="nn", nn_options=nn
    )
    assert np.array_equal(fit2, fit_idx)
    np.testing.assert_array_equal(model2.norm.mean, ref.mean)
    np.testing.assert_array_equal(model2.norm.std, ref.std)


# --------------------------------------------------------------------------- 2. final model


def _iso_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def final_model_problems(root: Path, symbol: str, spy: FitSpy) -> list[str]:
    """Check the saved model's tail against the rows its final fit used (the last spy call)."""
    meta = json.loads((root / "models" / symbol.lower() / "lgbm_filter.json").read_text())
    market = load_market(data_path(root / "data", symbol))
    d = build_dataset(
        market, LOOSE, negative_ratio=NEGATIVE_RATIO, decay=CFG.time_weight_decay, symbol=symbol
    )
    fit_idx, es_idx, model = spy.calls[-1]
    detail = meta["training_window_detail"]
    t0, t1 = _iso_ms(detail["tail_first"]), _iso_ms(detail["tail_last"])
    tail = np.flatnonzero((d.time_ms >= t0) & (d.time_ms <= t1))
    out = []
    if np.intersect1d(fit_idx, tail).size:
        out.append("fit rows inside the threshold tail")
    if purge_violations(d, fit_idx, int(d.bar_index[tail].min())):
        out.append("fit labels reach the threshold tail")
    if not np.isin(es_idx, tail).all():
        out.append("early stopping outside the tail")
    tail_sig = tail[d.is_signal[tail]]
    if meta["threshold_info"]["tail_signals"] != tail_sig.size:
        out.append("threshold not chosen on the tail's signal rows")
    thr, _ = training.operating_threshold(d.y[tail_sig], positive_proba(model, d.X[tail_sig]))
    if thr != meta["operating_threshold"]:
        out.append("stored threshold is not the tail's")
    return out


def _train(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> FitSpy:
    write_market(tmp / "data", "LEAKUSDT")
    spy = FitSpy(training.fit_backend)
    monkeypatch.setattr(training, "fit_backend", spy)
    train_symbol(
        "LEAKUSDT", data_dir=tmp / "data", model_dir=tmp / "models", config=CFG, wf=0, lgbm_overrides=FAST
    )
    return spy


def test_final_model_threshold_tail_is_purged_from_its_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _train(tmp_path, monkeypatch)
    assert final_model_problems(tmp_path, "LEAKUSDT", spy) == []


def test_final_model_check_catches_an_unpurged_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = training.holdout_tail
    monkeypatch.setattr(training, "holdout_tail", lambda b, f, **kw: real(b, f, lookahead=0, embargo=0))
    spy = _train(tmp_path, monkeypatch)
    assert "fit labels reach the threshold tail" in final_model_problems(tmp_path, "LEAKUSDT", spy)


# --------------------------------------------------------------------------- 4. tuning


@pytest.fixture(scope="module")
def tune_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("leak_tune")
    write_market(root, "TUNUSDT")
    return root


def _spy_tuning(monkeypatch: pytest.MonkeyPatch, *, leak: bool = False) -> dict[str, Any]:
    got: dict[str, Any] = {"calls": []}
    real_ds, real_folds, real_fit = tuning.build_dataset, tuning.purged_walk_forward, tuning_cv.fit_backend

    def ds_spy(*a: Any, **k: Any) -> Dataset:
        got["ds"] = real_ds(*a, **k)
        return got["ds"]

    def folds_spy(bars: Any, **k: Any) -> list[Fold]:
        if leak:  # the injected leak: no purge, no embargo
            k.update(lookahead=0, embargo=0)
        got["folds"] = real_folds(bars, **k)
        return got["folds"]

    def fit_spy(backend: str, d: Dataset, fit_idx: np.ndarray, es_idx: np.ndarray, **k: Any) -> Any:
        model = real_fit(backend, d, fit_idx, es_idx, **k)
        got["calls"].append((np.array(fit_idx), np.array(es_idx), model))
        return model

    monkeypatch.setattr(tuning, "build_dataset", ds_spy)
    monkeypatch.setattr(tuning, "purged_walk_forward", folds_spy)
    monkeypatch.setattr(tuning_cv, "fit_backend", fit_spy)
    return got


def tuning_problems(got: dict[str, Any]) -> list[str]:
    d, folds = got["ds"], got["folds"]
    out = []
    for fit_idx, es_idx, _ in got["calls"]:
        owner = [f for f in folds if np.isin(fit_idx, f.train_idx).all() and np.isin(es_idx, f.es_idx).all()]
        if not owner:
            out.append("a fit used rows outside every fold's training part")
            continue
        out += isolation_problems(d, owner[-1], fit_idx, es_idx)
    return out


def _tune(data: Path, models: Path, trials: int, **kw: Any) -> tuning.TuneReport:
    return tuning.tune_symbol(
        "TUNUSDT",
        data_dir=data,
        model_dir=models,
        config=CFG,
        trials=trials,
        folds=3,
        n_estimators_range=(20, 40),
        **kw,
    )


def test_tuning_objective_fits_on_purged_folds_and_scores_validation_signal_rows(
    tune_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = _spy_tuning(monkeypatch)
    rep = _tune(tune_data, tmp_path / "models", 2)
    d, folds = got["ds"], got["folds"]
    assert got["calls"] and tuning_problems(got) == []
    # The scores the promotion compares are recomputed here from the validation signal rows of
    # each fold and the model the spy saw: baseline first, then each trial, fold by fold.
    per_run = len(folds)
    assert len(got["calls"]) == 3 * per_run  # baseline + 2 trials, no fold skipped or pruned
    runs = [got["calls"][i : i + per_run] for i in range(0, len(got["calls"]), per_run)]
    scores = []
    for run in runs:
        prec, auc = [], []
        for fold, (_, _, model) in zip(folds, run, strict=True):
            val = fold.val_idx[d.is_signal[fold.val_idx]]
            p = positive_proba(model, d.X[val])
            pr, rc, _ = precision_recall_curve(d.y[val], p)
            ok = rc[:-1] >= 0.35
            auc.append(roc_auc_score(d.y[val], p))
            if d.y[val].sum() >= tuning_cv.MIN_FOLD_POSITIVES:
                prec.append(pr[:-1][ok].max() if ok.any() else 0.0)
        scores.append(np.mean(prec) + 0.001 * np.mean(auc))
    assert rep.baseline is not None and rep.baseline.score == pytest.approx(scores[0])
    trial_scores = [t["score"] for t in rep.results["trials"]]
    assert trial_scores == pytest.approx(scores[1:])
    assert rep.promoted == promotion.promotion_decision(rep.best, rep.baseline)[0]


def test_tuning_check_catches_unpurged_folds(
    tune_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = _spy_tuning(monkeypatch, leak=True)
    _tune(tune_data, tmp_path / "models", 0)  # the baseline CV alone
    assert "early-stopping labels reach the validation period" in tuning_problems(got)


def _cv(score: float, std: float, folds: int) -> tuning_cv.CVResult:
    return tuning_cv.CVResult(score, 0.6, score, 0.4, std, folds)


def test_promotion_rule_boundaries() -> None:
    base = _cv(0.40, 0.0, 5)
    margin = promotion.PROMOTION_MARGIN
    assert not promotion.promotion_decision(_cv(0.40 + margin - 1e-9, 0.0, 5), base)[0]
    assert promotion.promotion_decision(_cv(0.40 + margin + 1e-9, 0.0, 5), base)[0]
    assert promotion.promotion_decision(_cv(0.60, promotion.MAX_FOLD_PRECISION_STD, 5), base)[0]
    assert not promotion.promotion_decision(_cv(0.60, promotion.MAX_FOLD_PRECISION_STD + 1e-9, 5), base)[0]
    assert not promotion.promotion_decision(_cv(0.60, float("nan"), 5), base)[0]
    assert promotion.promotion_decision(_cv(0.60, 0.0, promotion.MIN_PRECISION_FOLDS), base)[0]
    assert not promotion.promotion_decision(_cv(0.60, 0.0, promotion.MIN_PRECISION_FOLDS - 1), base)[0]
    assert not promotion.promotion_decision(None, base)[0]


def test_no_baseline_never_promotes_even_a_perfect_trial(
    tune_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake(
        ds: Dataset, folds: list[Fold], params: Any, *, min_recall: float, seed: int = 42, trial: Any = None
    ) -> tuning_cv.CVResult:
        return _cv(1.0, 0.0, 5) if trial is not None else _cv(0.0, 0.0, 5)

    monkeypatch.setattr(tuning, "cv_score", fake)
    models = tmp_path / "models"
    rep = _tune(tune_data, models, 2, baseline=False)
    assert not rep.promoted and rep.baseline is None and "no baseline" in rep.reasons[0]
    assert not (models / "tunusdt" / ACTIVE_PARAMS_FILE).exists()
    # The same trials with a baseline would have been promoted: the refusal is the flag's doing.
    assert promotion.promotion_decision(rep.best, _cv(0.0, 0.0, 5))[0]
    assert rep.results["promotion"]["promoted"] is False


def test_bar_gap_constant_is_what_the_spec_asks() -> None:
    assert LOOKAHEAD == 24 and EMBARGO >= 24 and BAR_MS == 15 * 60_000
