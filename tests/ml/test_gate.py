"""Issue 11 §2, the deploy gate (``perpbot.ml.gate``): ``train`` writes a verdict into the model's
metadata, folds without positives are excluded from the means and counted, ``MLFilter`` serves a
failed model only with ``ML_ALLOW_UNGATED``; and ``train --all`` with missing data leaves one
error line per symbol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from perpbot.config import AppConfig
from perpbot.ml import artifacts
from perpbot.ml.filter import MLFilter
from perpbot.ml.gate import GATE_MIN_POSITIVES, GATE_PRECISION_MARGIN, gate_verdict
from perpbot.ml.train_report import FoldMetrics, summarize
from perpbot.ml.training import train_symbol
from tests.support.cli import invoke
from tests.support.ml import LOOSE, write_market

CFG = AppConfig(default_params=LOOSE)
FAST = {"n_estimators": 40}


def fold(i: int, *, auc: float, prec: float, base: float, pos: int = 20, sig: int = 100) -> FoldMetrics:
    return FoldMetrics(
        fold=i,
        val_start="2025-01-01T00:00:00Z",
        val_end="2025-01-02T00:00:00Z",
        n_fit=100,
        n_es=10,
        n_val_signals=sig,
        n_val_positives=pos,
        auc=auc,
        threshold=0.5,
        threshold_fallback=False,
        precision=prec,
        recall=0.5,
        n_accepted=10,
        precision_at_config=prec,
        recall_at_config=0.5,
        baseline_auc=0.5,
        baseline_precision=base,
    )


def test_a_model_that_beats_the_baseline_beyond_noise_passes() -> None:
    folds = [fold(i, auc=a, prec=0.45, base=0.30) for i, a in enumerate((0.60, 0.62, 0.58))]
    v = gate_verdict(folds, 3)
    assert v.passed and v.word == "pass"
    assert v.detail["folds_counted"] == 3 and "precision 0.450 vs baseline 0.300" in v.reason


def test_auc_worse_than_chance_fails() -> None:
    """The XRPUSDT fold of the issue (AUC 0.375) must not hide behind a good fold."""
    folds = [fold(0, auc=0.375, prec=0.5, base=0.3), fold(1, auc=0.70, prec=0.5, base=0.3)]
    v = gate_verdict(folds, 2)
    assert not v.passed and "AUC does not exceed 0.5 by more than the fold noise" in v.reason


def test_precision_not_beating_the_baseline_by_the_margin_fails() -> None:
    edge = GATE_PRECISION_MARGIN / 2
    folds = [fold(i, auc=0.65, prec=0.30 + edge, base=0.30) for i in range(3)]
    v = gate_verdict(folds, 3)
    assert not v.passed and "precision does not beat the baseline" in v.reason


def test_folds_without_enough_positives_are_left_out_and_counted() -> None:
    good = [fold(i, auc=0.65, prec=0.5, base=0.3) for i in range(2)]
    empty = fold(2, auc=0.5, prec=0.0, base=0.0, pos=0)
    few = fold(3, auc=0.1, prec=0.0, base=0.02, pos=GATE_MIN_POSITIVES - 1)
    v = gate_verdict([*good, empty, few], 4)
    assert v.passed, v.reason
    assert v.detail["folds_counted"] == 2
    assert v.detail["folds_without_positives"] == 1 and v.detail["folds_too_few_positives"] == 1
    # The means exclude the fold without positives (it used to count as AUC 0.5).
    mean_auc, _ = summarize([*good, empty])["auc"]
    assert mean_auc == pytest.approx(0.65)


def test_too_few_counted_folds_and_wf_zero_fail() -> None:
    assert not gate_verdict([fold(0, auc=0.9, prec=0.9, base=0.1)], 1).passed
    v = gate_verdict([], 0)
    assert not v.passed and "--wf 0" in v.reason


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gate")
    write_market(root / "data", "GATUSDT")
    train_symbol(
        "GATUSDT", data_dir=root / "data", model_dir=root / "models", config=CFG, wf=3, lgbm_overrides=FAST
    )
    return root


def test_train_writes_the_verdict_into_metadata_and_log(trained_root: Path) -> None:
    folder = trained_root / "models" / "gatusdt"
    meta = json.loads((folder / "lgbm_filter.json").read_text())
    assert meta["gate"] in ("pass", "fail") and meta["gate_reason"]
    assert meta["gate_detail"]["folds_evaluated"] == 3
    assert "folds_without_positives" in meta["walk_forward"]
    log = json.loads((folder / "training_log.json").read_text())
    assert log[-1]["gate"] == meta["gate"]


def _with_gate(folder: Path, verdict: str) -> None:
    meta = json.loads((folder / "lgbm_filter.json").read_text())
    meta.update(gate=verdict, gate_reason="test verdict")
    native = (folder / "lgbm_filter.txt").read_text()
    artifacts.save_model(folder, "lgbm", (folder / "lgbm_filter.onnx").read_bytes(), meta, native_text=native)


def test_filter_refuses_a_failed_model_unless_allowed(trained_root: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "gatusdt"
    shutil.copytree(trained_root / "models" / "gatusdt", folder)
    _with_gate(folder, "fail")
    f = MLFilter(folder, backends=("lgbm",))
    assert not f.has_model
    assert "failed the deploy gate (test verdict)" in (f.unavailable_reason or "")
    assert "ML_ALLOW_UNGATED" in (f.unavailable_reason or "")
    assert f.decide(np.zeros(26)).allowed  # runs without the filter
    assert MLFilter(folder, backends=("lgbm",), allow_ungated=True).has_model
    _with_gate(folder, "pass")
    assert MLFilter(folder, backends=("lgbm",)).has_model


def test_default_threshold_mode_serves_the_trained_threshold(trained_root: Path) -> None:
    from perpbot.config import load_config

    folder = trained_root / "models" / "gatusdt"
    meta = json.loads((folder / "lgbm_filter.json").read_text())
    cfg = load_config({"ML_BACKENDS": "lgbm", "ML_ALLOW_UNGATED": "true"}, env_file=None)
    f = MLFilter.from_config(trained_root / "models", "GATUSDT", cfg)
    assert f.threshold == meta["operating_threshold"] and f.threshold_source == "model"
    explicit = load_config(
        {"ML_BACKENDS": "lgbm", "ML_THRESHOLD": "0.55", "ML_ALLOW_UNGATED": "1"}, env_file=None
    )
    g = MLFilter.from_config(trained_root / "models", "GATUSDT", explicit)
    assert g.threshold == 0.55 and g.threshold_source == "config"


def test_cli_train_prints_the_gate_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for k, v in {"SIGNAL_THRESHOLD": "2", "ADX_THRESHOLD": "0", "VOL_MULTIPLIER": "1.0"}.items():
        monkeypatch.setenv(k, v)
    write_market(tmp_path / "data", "GCLUSDT", days=20, seed=5)
    res = invoke(
        "train", "--symbol", "GCLUSDT", "--wf", "0", "--data-dir", "data", "--model-dir", "m", "--quiet"
    )
    assert res.exit_code == 0, res.output
    assert "GCLUSDT [lgbm]: gate FAIL: not validated: trained with --wf 0" in res.stdout


def test_train_all_with_missing_data_prints_one_line_per_symbol_and_no_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SYMBOLS", raising=False)
    res = invoke("train", "--all", "--data-dir", str(tmp_path / "none"), "--model-dir", str(tmp_path / "m"))
    assert res.exit_code == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 3 and all(ln.startswith("error: ") for ln in lines), res.stderr
    assert not (tmp_path / "m").exists()  # nothing trained, no empty models folder


def test_live_pass_through_logs_the_cause_in_words(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Live/paper keep the SPEC rule (log, pass every signal), but the log names the cause."""
    import logging

    folder = tmp_path / "xrpusdt"
    folder.mkdir()
    (folder / "lgbm_filter.onnx").write_bytes(b"\x00truncated")
    (folder / "lgbm_filter.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="perpbot.ml.filter"):
        f = MLFilter(folder, backends=("lgbm",))
    assert not f.has_model and f.decide(np.zeros(26)).allowed
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "no model served, every signal passes" in text and "lgbm_filter" in text
    assert "%s" not in text
    assert f.status()["unavailable_reason"] == f.unavailable_reason


def test_live_alert_callback_gets_the_cause_in_words(trained_root: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "gatusdt"
    shutil.copytree(trained_root / "models" / "gatusdt", folder)
    _with_gate(folder, "fail")
    alerts: list[str] = []
    f = MLFilter(folder, backends=("lgbm",), on_unavailable=alerts.append)
    assert not f.has_model
    assert len(alerts) == 1 and "every signal passes" in alerts[0] and "failed the deploy gate" in alerts[0]
    assert "%" not in alerts[0]
    _with_gate(folder, "pass")
    f.maybe_reload()
    assert f.has_model and len(alerts) == 1  # a served model raises no alert
