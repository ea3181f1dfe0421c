"""Optuna tuning: SQLite study that resumes, SPEC search space, and the promotion rule both ways."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import Result

from perpbot.config import AppConfig
from perpbot.data.schema import data_path
from perpbot.ml import tuning
from perpbot.ml.lgbm_params import ACTIVE_PARAMS_FILE, resolve_lgbm_params
from perpbot.ml.promotion import PROMOTION_RULE, promotion_decision
from perpbot.ml.tuning import tune_symbol
from perpbot.ml.tuning_cv import CVResult, suggest_params
from tests.support.cli import invoke, load_script, one_line_error
from tests.support.ml import LOOSE, LOOSE_ENV, write_market

CFG = AppConfig(default_params=LOOSE)
SMALL = (20, 40)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune_data")
    write_market(root, "TUNUSDT")
    return root


def _tune(data_dir: Path, models: Path, trials: int, **kwargs: Any) -> tuning.TuneReport:
    """A small study on the module's market: 3 folds, tiny forests."""
    return tune_symbol(
        "TUNUSDT",
        data_dir=data_dir,
        model_dir=models,
        config=CFG,
        trials=trials,
        folds=3,
        n_estimators_range=SMALL,
        **kwargs,
    )


def _cv(score: float, std: float, folds: int) -> CVResult:
    return CVResult(
        score=score,
        auc=0.6,
        precision=score,
        recall=0.4,
        precision_std=std,
        precision_folds=folds,
        fold_auc=[0.6] * 5,
        fold_precision=[score] * 5,
        fold_recall=[0.4] * 5,
        fold_positives=[5] * 5,
        fold_counted=[True] * 5,
    )


def test_real_three_trial_study_then_resume(tmp_path: Path, data_dir: Path) -> None:
    models = tmp_path / "models"
    r1 = _tune(data_dir, models, 3)
    sym_dir = models / "tunusdt"
    assert (sym_dir / "optuna.sqlite3").is_file()
    assert r1.trials_new == 3 and r1.trials_total == 3
    res = json.loads(r1.results_path.read_text())
    assert r1.results_path.name.startswith("tune_results_") and r1.results_path.suffix == ".json"
    for key in (
        "timestamp",
        "data_path",
        "recall_constraint",
        "n_trials",
        "elapsed_s",
        "baseline",
        "best_trial",
        "trials",
        "promotion",
    ):
        assert key in res, key
    assert res["recall_constraint"] == 0.35
    assert len(res["best_trial"]["fold_precision"]) == 3 == len(res["baseline"]["fold_precision"])
    assert "weight_scale" in res["best_trial"]["params"]
    assert res["promotion"]["promoted"] == r1.promoted and res["promotion"]["reasons"]
    assert res["promotion"]["rule"] == PROMOTION_RULE

    # An interrupted/finished study resumes: asking for 5 in total runs only 2 more.
    r2 = _tune(data_dir, models, 5, baseline=False)
    assert r2.trials_new == 2 and r2.trials_total == 5
    assert r2.study_name == r1.study_name
    study = optuna.load_study(study_name=r2.study_name, storage=r2.storage)
    assert len(study.trials) == 5
    assert not r2.promoted and "no baseline" in r2.reasons[0]
    assert r2.results_path != r1.results_path


def test_search_space_bounds() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        p = suggest_params(trial)
        assert 100 <= p["n_estimators"] <= 600 and 0.01 <= p["learning_rate"] <= 0.2
        assert 2 <= p["max_depth"] <= 7
        assert 7 <= p["num_leaves"] <= max(7, min(31, 2 ** p["max_depth"] - 1))
        assert 10 <= p["min_child_samples"] <= 50
        assert 0.5 <= p["subsample"] <= 1.0 and 0.5 <= p["colsample_bytree"] <= 1.0
        assert 1e-4 <= p["reg_alpha"] <= 1.0 and 1e-4 <= p["reg_lambda"] <= 1.0
        assert 0.5 <= p["weight_scale"] <= 2.0
        study.tell(trial, 0.0)


def test_promotion_rule_unit() -> None:
    base = _cv(0.50, 0.02, 5)
    assert promotion_decision(_cv(0.52, 0.02, 5), base)[0] is True
    ok, why = promotion_decision(_cv(0.505, 0.02, 5), base)
    assert not ok and "does not beat baseline" in why[0]
    ok, why = promotion_decision(_cv(0.60, 0.08, 5), base)
    assert not ok and "std" in why[0]
    ok, why = promotion_decision(_cv(0.60, 0.02, 2), base)
    assert not ok and "only 2 fold(s)" in why[0]
    assert promotion_decision(_cv(0.9, 0.0, 5), None)[0] is False


def _fake_cv(best_score: float, best_std: float, baseline_score: float):
    """Stand-in for the CV: the baseline (no trial) gets one score, every trial another."""

    def fake(ds, folds, params, *, min_recall, seed=42, trial=None):
        if trial is None:
            return _cv(baseline_score, 0.0, 5)
        trial.report(best_score, 0)
        return _cv(best_score, best_std, 5)

    return fake


def test_promotion_writes_active_params_used_by_training(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tuning, "cv_score", _fake_cv(0.70, 0.01, 0.50))
    models = tmp_path / "models"
    rep = _tune(data_dir, models, 2)
    assert rep.promoted, rep.reasons
    active = models / "tunusdt" / ACTIVE_PARAMS_FILE
    saved = json.loads(active.read_text())
    assert saved["best_trial"]["params"] == rep.best_params
    resolved = resolve_lgbm_params(models / "tunusdt")
    assert resolved.params["n_estimators"] == rep.best_params["n_estimators"]
    assert resolved.weight_scale == pytest.approx(rep.best_params["weight_scale"])
    # --no-baseline never promotes, even with the same (winning) trials: the active file stays.
    before = active.read_bytes()
    rep2 = _tune(data_dir, models, 3, baseline=False)
    assert not rep2.promoted and active.read_bytes() == before


def test_no_promotion_keeps_active_params(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    active = models / "tunusdt" / ACTIVE_PARAMS_FILE
    active.parent.mkdir(parents=True)
    active.write_text(json.dumps({"best_trial": {"params": {"n_estimators": 111}}}))
    before = active.read_bytes()
    # Better score but unstable across folds -> refused, and the reason is reported.
    monkeypatch.setattr(tuning, "cv_score", _fake_cv(0.70, 0.20, 0.50))
    rep = _tune(data_dir, models, 2)
    assert not rep.promoted and any("std" in r for r in rep.reasons)
    assert active.read_bytes() == before
    res = json.loads(rep.results_path.read_text())
    assert res["baseline"]["params"]["n_estimators"] == 111  # baseline = the active parameters
    assert res["promotion"]["promoted"] is False


def test_results_file_is_strict_json(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No fold counted -> the per-fold precision std is NaN; the file must still be strict JSON.
    monkeypatch.setattr(tuning, "cv_score", _fake_cv(0.70, float("nan"), 0.50))
    rep = _tune(data_dir, tmp_path / "models", 1)
    assert not rep.promoted

    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    res = json.loads(rep.results_path.read_text(), parse_constant=refuse)
    assert res["best_trial"]["precision_std"] is None


@pytest.fixture()
def tune_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CLI/script runs: no stray .env, the relaxed rule, and a stand-in CV that never promotes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps the result lines at 80 columns otherwise
    for k, v in LOOSE_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SYMBOLS", raising=False)
    monkeypatch.delenv("SYMBOL", raising=False)
    monkeypatch.setattr(tuning, "cv_score", _fake_cv(0.505, 0.01, 0.50))
    return tmp_path


def _cli_tune(data_dir: Path, models: Path, *extra: str) -> Result:
    return invoke(
        "tune",
        "--symbol",
        "TUNUSDT",
        "--trials",
        "2",
        "--folds",
        "3",
        "--data-dir",
        str(data_dir),
        "--model-dir",
        str(models),
        *extra,
    )


def test_cli_tune(tune_env: Path, data_dir: Path) -> None:
    res = _cli_tune(data_dir, tune_env / "m", "--quiet")
    assert res.exit_code == 0, res.output
    assert "not promoted" in res.output and "does not beat baseline" in res.output
    assert res.stderr == ""  # --quiet: no progress bar
    one_line_error(invoke("tune", "--symbol", "TUNUSDT", "--all"), "mutually exclusive")


def test_cli_tune_shows_a_progress_bar(tune_env: Path, data_dir: Path) -> None:
    res = _cli_tune(data_dir, tune_env / "m")
    assert res.exit_code == 0, res.output
    assert "TUNUSDT tuning" in res.stderr and "2/2" in res.stderr and "━" in res.stderr


def test_tune_script_keeps_the_spec_flags(
    tune_env: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script("tune_hyperparams.py")
    models = tune_env / "m"
    argv = ["--trials", "2", "--folds", "3", "--train-ratio", "0.6", "--min-recall", "0.3", "--quiet"]
    assert (
        script.main(["--symbol", "tunusdt", *argv, "--data-dir", str(data_dir), "--model-dir", str(models)])
        == 0
    )
    (results,) = (models / "tunusdt").glob("tune_results_*.json")
    saved = json.loads(results.read_text())
    assert saved["recall_constraint"] == 0.3 and saved["folds"] == 3 and saved["n_trials"]["new"] == 2
    # --data without --symbol: the file's folder names the symbol; --no-baseline never promotes.
    data_file = data_path(data_dir, "TUNUSDT")
    assert script.main(["--data", str(data_file), *argv, "--no-baseline", "--model-dir", str(models)]) == 0
    assert "no baseline computed" in capsys.readouterr().out
    assert not (models / "tunusdt" / ACTIVE_PARAMS_FILE).exists()
    assert script.main(["--symbol", "TUNUSDT", "--all"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "mutually exclusive" in err
