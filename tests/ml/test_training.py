"""End-to-end training on a small synthetic market, parameter precedence, guards and the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import Result

from perpbot.config import AppConfig
from perpbot.data.schema import data_path
from perpbot.data.synth import synth_market
from perpbot.errors import ConfigError, InsufficientDataError
from perpbot.ml.dataset import build_dataset
from perpbot.ml.evaluation import max_precision_at_recall, operating_threshold, precision_recall_at, safe_auc
from perpbot.ml.lgbm_params import ACTIVE_PARAMS_FILE, resolve_lgbm_params
from perpbot.ml.splits import purged_walk_forward
from perpbot.ml.train_report import TrainReport
from perpbot.ml.training import train_symbol
from tests.support.cli import invoke, load_script, one_line_error
from tests.support.data import BAD_PARQUETS
from tests.support.ml import LOOSE, LOOSE_ENV, cpu_session, write_market

CFG = AppConfig(default_params=LOOSE)
FAST = {"n_estimators": 40}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainReport]:
    root = tmp_path_factory.mktemp("train")
    write_market(root / "data", "TRNUSDT")
    report = train_symbol(
        "TRNUSDT", data_dir=root / "data", model_dir=root / "models", config=CFG, wf=3, lgbm_overrides=FAST
    )
    return root, report


# ------------------------------------------------------------------ metrics helpers


def test_metric_helpers() -> None:
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.7])
    assert safe_auc(np.ones(4), np.arange(4.0)) == 0.5
    assert precision_recall_at(y, p, 0.75) == (1.0, 2 / 3, 2)
    assert precision_recall_at(y, p, 0.95) == (0.0, 0.0, 0)
    thr, prec, rec = max_precision_at_recall(y, p, 0.5)
    assert (thr, prec, rec) == (0.8, 1.0, 2 / 3)
    assert operating_threshold(np.zeros(5), np.linspace(0, 1, 5)) == (0.5, True)


# ------------------------------------------------------------------ end to end


def test_train_writes_model_metadata_and_log(trained: tuple[Path, TrainReport]) -> None:
    root, report = trained
    sym_dir = root / "models" / "trnusdt"
    for name in ("lgbm_filter.onnx", "lgbm_filter.json", "lgbm_filter.txt", "training_log.json"):
        assert (sym_dir / name).is_file(), name
    meta = json.loads((sym_dir / "lgbm_filter.json").read_text())
    from perpbot.data.store import data_file_sha256
    from perpbot.ml.features import feature_schema_hash

    assert meta["feature_schema_hash"] == feature_schema_hash()
    assert meta["data_sha256"] == data_file_sha256(data_path(root / "data", "TRNUSDT"))
    assert meta["operating_threshold"] == pytest.approx(report.threshold)
    assert 0.0 < report.threshold < 1.0
    assert len(meta["walk_forward"]["folds"]) == len(report.folds) == 3
    assert meta["walk_forward"]["embargo"] == 24
    assert meta["params"]["n_estimators"] == 40 and "weight_scale" not in meta["params"]
    assert meta["weight_scale"] == pytest.approx(1.783105)
    assert meta["training_window"]["start"] and meta["training_window"]["end"]
    assert meta["signal_params"]["atr_sl_mult"] == 1.5 and meta["signal_params"]["atr_tp_mult"] == 2.0
    assert meta["library_versions_training"]["lightgbm"]
    log = json.loads((sym_dir / "training_log.json").read_text())
    assert len(log) == 1 and log[0]["backend"] == "lgbm" and log[0]["symbol"] == "TRNUSDT"
    assert log[0]["threshold"] == pytest.approx(report.threshold)


def test_onnx_file_serves_the_trained_model(trained: tuple[Path, TrainReport]) -> None:
    root, _ = trained
    sess = cpu_session((root / "models" / "trnusdt" / "lgbm_filter.onnx").read_bytes())
    market = synth_market(20, 11, symbol="TRNUSDT").iloc[:-1]
    ds = build_dataset(market, LOOSE, decay=2.0)
    inp = sess.get_inputs()[0]
    dtype = np.float64 if "double" in inp.type else np.float32
    proba = np.asarray(sess.run(None, {inp.name: ds.X[:50].astype(dtype)})[0]).ravel()
    assert proba.shape == (50,) and np.all((proba >= 0) & (proba <= 1))
    assert np.unique(np.round(proba, 6)).size > 1


def test_fold_metrics_are_on_signal_rows_with_the_no_ml_baseline(trained: tuple[Path, TrainReport]) -> None:
    _, report = trained
    market = synth_market(20, 11, symbol="TRNUSDT").iloc[:-1]  # the loader drops the unmarked last row
    ds = build_dataset(market, LOOSE, decay=2.0, symbol="TRNUSDT")
    folds = purged_walk_forward(ds.bar_index, n_folds=3, es_fraction=0.15)
    for fold, fm in zip(folds, report.folds, strict=True):
        val = fold.val_idx[ds.is_signal[fold.val_idx]]
        assert fm.n_val_signals == val.size < fold.val_idx.size  # HOLD negatives excluded
        assert fm.n_val_positives == int(ds.y[val].sum())
        assert fm.baseline_precision == pytest.approx(ds.y[val].mean())
        assert fm.baseline_recall == 1.0
        assert 0.0 <= fm.auc <= 1.0 and 0.0 <= fm.precision <= 1.0
    mean, std = report.summary["baseline_precision"]
    assert std == pytest.approx(np.std([f.baseline_precision for f in report.folds]))
    assert mean == pytest.approx(np.mean([f.baseline_precision for f in report.folds]))


def test_training_is_deterministic_and_log_appends(tmp_path: Path, trained: tuple[Path, TrainReport]) -> None:
    root, _ = trained
    again = train_symbol(
        "TRNUSDT", data_dir=root / "data", model_dir=tmp_path, config=CFG, wf=3, lgbm_overrides=FAST
    )
    a = (root / "models" / "trnusdt" / "lgbm_filter.onnx").read_bytes()
    b = (tmp_path / "trnusdt" / "lgbm_filter.onnx").read_bytes()
    assert a == b
    train_symbol("TRNUSDT", data_dir=root / "data", model_dir=tmp_path, config=CFG, wf=0, lgbm_overrides=FAST)
    log = json.loads((tmp_path / "trnusdt" / "training_log.json").read_text())
    assert len(log) == 2 and log[1]["wf_folds"] == 0
    assert (tmp_path / "trnusdt" / "lgbm_filter_prev.onnx").exists()  # previous model kept
    assert again.threshold > 0


def test_nn_backend_same_dataset_and_splits(tmp_path: Path, trained: tuple[Path, TrainReport]) -> None:
    root, lgbm_report = trained
    report = train_symbol(
        "TRNUSDT",
        data_dir=root / "data",
        model_dir=tmp_path,
        config=CFG,
        backend="mlx",
        wf=3,
        nn_options={"epochs": 3, "hidden_dim": 16},
    )
    assert report.backend == "nn"
    assert (tmp_path / "trnusdt" / "nn_filter.onnx").is_file()
    assert [f.n_val_signals for f in report.folds] == [f.n_val_signals for f in lgbm_report.folds]
    assert [f.n_fit for f in report.folds] == [f.n_fit for f in lgbm_report.folds]  # same balancing
    meta = json.loads((tmp_path / "trnusdt" / "nn_filter.json").read_text())
    assert meta["params"]["epochs"] == 3


# ------------------------------------------------------------------ parameter precedence


def test_params_precedence(tmp_path: Path) -> None:
    sym_dir = tmp_path / "prcusdt"
    sym_dir.mkdir()
    r = resolve_lgbm_params(sym_dir)
    assert (
        r.source == "defaults"
        and r.params["n_estimators"] == 434
        and r.weight_scale == pytest.approx(1.783105)
    )
    (sym_dir / ACTIVE_PARAMS_FILE).write_text(
        json.dumps({"best_trial": {"params": {"n_estimators": 123, "max_depth": 3, "weight_scale": 0.7}}})
    )
    r = resolve_lgbm_params(sym_dir)
    assert r.params["n_estimators"] == 123 and r.params["max_depth"] == 3 and r.weight_scale == 0.7
    assert "weight_scale" not in r.params and r.params["learning_rate"] == 0.123659
    tuned = tmp_path / "tuned.json"
    tuned.write_text(json.dumps({"best_trial": {"params": {"n_estimators": 77}}}))
    r = resolve_lgbm_params(sym_dir, tuned)
    assert r.params["n_estimators"] == 77 and r.params["max_depth"] == 6  # tuned file wins, active ignored
    assert r.weight_scale == pytest.approx(1.783105)
    tuned.write_text(json.dumps({"n_estimator": 5}))
    with pytest.raises(ConfigError, match="unknown LightGBM parameter 'n_estimator'"):
        resolve_lgbm_params(sym_dir, tuned)
    tuned.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        resolve_lgbm_params(sym_dir, tuned)


def test_tuned_params_reach_the_saved_model(tmp_path: Path, trained: tuple[Path, TrainReport]) -> None:
    root, _ = trained
    models = tmp_path / "models"
    (models / "trnusdt").mkdir(parents=True)
    (models / "trnusdt" / ACTIVE_PARAMS_FILE).write_text(
        json.dumps(
            {
                "best_trial": {
                    "params": {"n_estimators": 30, "max_depth": 3, "num_leaves": 7, "weight_scale": 1.0}
                }
            }
        )
    )
    rep = train_symbol("TRNUSDT", data_dir=root / "data", model_dir=models, config=CFG, wf=0)
    meta = json.loads((models / "trnusdt" / "lgbm_filter.json").read_text())
    assert rep.params_source.endswith(ACTIVE_PARAMS_FILE)
    assert meta["params"]["max_depth"] == 3 and meta["weight_scale"] == 1.0
    tuned = tmp_path / "t.json"
    tuned.write_text(json.dumps({"params": {"n_estimators": 25, "max_depth": 2}}))
    rep = train_symbol(
        "TRNUSDT", data_dir=root / "data", model_dir=models, config=CFG, wf=0, tuned_params=tuned
    )
    meta = json.loads((models / "trnusdt" / "lgbm_filter.json").read_text())
    assert rep.params_source.startswith("tuned-params") and meta["params"]["max_depth"] == 2


# ------------------------------------------------------------------ guards


def test_fewer_than_200_samples(tmp_path: Path) -> None:
    write_market(tmp_path / "data", "FEWUSDT", days=2)
    with pytest.raises(InsufficientDataError, match="FEWUSDT"):
        train_symbol("FEWUSDT", data_dir=tmp_path / "data", model_dir=tmp_path / "models", config=CFG, wf=2)
    assert not (tmp_path / "models" / "fewusdt" / "lgbm_filter.onnx").exists()


# ------------------------------------------------------------------ CLI


@pytest.fixture()
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps long one-line errors at 80 columns otherwise
    for k, v in LOOSE_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SYMBOLS", raising=False)
    monkeypatch.delenv("SYMBOL", raising=False)
    return tmp_path


def test_cli_train_unseen_symbol(cli_env: Path) -> None:
    """A symbol no other test uses, trained through the CLI on a temporary data folder."""
    write_market(cli_env / "data", "QZWUSDT", days=20, seed=5)
    res = invoke(
        "train",
        "--symbol",
        "qzwusdt",
        "--wf",
        "3",
        "--data-dir",
        str(cli_env / "data"),
        "--model-dir",
        str(cli_env / "models"),
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    assert "QZWUSDT" in res.output and "mean" in res.output and "bprec" in res.output
    assert (cli_env / "models" / "qzwusdt" / "lgbm_filter.onnx").is_file()


def test_cli_symbol_and_all_is_exit_2(cli_env: Path) -> None:
    res = invoke("train", "--symbol", "XRPUSDT", "--all", "--quiet")
    assert res.exit_code == 2
    assert "mutually exclusive" in res.output


def test_cli_missing_parquet_is_exit_2(cli_env: Path) -> None:
    res = invoke("train", "--symbol", "NOPEUSDT", "--data-dir", str(cli_env / "nodata"), "--quiet")
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "not found" in lines[0]


def test_cli_unwritable_models_folder_is_exit_2(cli_env: Path) -> None:
    write_market(cli_env / "data", "UNWUSDT", days=20)
    blocker = cli_env / "models_is_a_file"
    blocker.write_text("not a folder")
    res = invoke(
        "train",
        "--symbol",
        "UNWUSDT",
        "--data-dir",
        str(cli_env / "data"),
        "--model-dir",
        str(blocker),
        "--quiet",
    )
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not writable" in lines[0]


def test_cli_bad_backend_and_bad_tuned_params(cli_env: Path) -> None:
    res = invoke("train", "--symbol", "XRPUSDT", "--backend", "xgb", "--quiet")
    assert res.exit_code == 2 and "--backend" in res.output
    write_market(cli_env / "data", "BTPUSDT", days=20)
    res = invoke(
        "train",
        "--symbol",
        "BTPUSDT",
        "--data-dir",
        str(cli_env / "data"),
        "--model-dir",
        str(cli_env / "models"),
        "--tuned-params",
        str(cli_env / "missing.json"),
        "--quiet",
    )
    assert res.exit_code == 2 and "tuned-params file not found" in res.output
    assert not (cli_env / "models" / "btpusdt" / "lgbm_filter.onnx").exists()


def test_cli_deploy_from_staging(cli_env: Path) -> None:
    write_market(cli_env / "data", "DPLUSDT", days=20)
    staging, live = cli_env / "staging", cli_env / "models"
    res = invoke(
        "train",
        "--symbol",
        "DPLUSDT",
        "--wf",
        "0",
        "--data-dir",
        str(cli_env / "data"),
        "--model-dir",
        str(staging),
        "--quiet",
    )
    assert res.exit_code == 0, res.output
    deploy = ("deploy", "--symbol", "DPLUSDT", "--from", str(staging), "--model-dir", str(live))
    # Trained with --wf 0 the model is not validated: its gate verdict is fail (issue 11 §2).
    refused = invoke(*deploy)
    assert refused.exit_code == 2 and "failed the deploy gate" in refused.output
    assert not (live / "dplusdt").exists()
    res = invoke(*deploy, "--force")
    assert res.exit_code == 0, res.output
    assert (live / "dplusdt" / "lgbm_filter.onnx").read_bytes() == (
        staging / "dplusdt" / "lgbm_filter.onnx"
    ).read_bytes()
    res = invoke(
        *["deploy", "--symbol", "DPLUSDT", "--from", str(cli_env / "empty"), "--model-dir", str(live)]
    )
    assert res.exit_code == 2 and "nothing to deploy" in res.output


def _train(cli_env: Path, symbol: str, *extra: str, models: str = "models") -> Result:
    return invoke(
        "train",
        "--symbol",
        symbol,
        "--data-dir",
        str(cli_env / "data"),
        "--model-dir",
        str(cli_env / models),
        *extra,
    )


def test_cli_train_shows_a_progress_bar_unless_quiet(cli_env: Path) -> None:
    write_market(cli_env / "data", "PGBUSDT")
    shown = _train(cli_env, "PGBUSDT", "--wf", "2")
    assert shown.exit_code == 0, shown.output
    assert "PGBUSDT saved" in shown.stderr and "5/5" in shown.stderr and "━" in shown.stderr
    quiet = _train(cli_env, "PGBUSDT", "--wf", "2", "--quiet")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and "PGBUSDT" in quiet.stdout


@BAD_PARQUETS
def test_cli_train_refuses_a_bad_parquet(cli_env: Path, synth_market, make_bad, fragment: str) -> None:  # type: ignore[no-untyped-def]
    path = data_path(cli_env / "data", "BADUSDT")
    path.parent.mkdir(parents=True)
    make_bad(path, synth_market)
    one_line_error(_train(cli_env, "BADUSDT"), str(path), fragment)  # no --quiet: the bar is erased
    assert not (cli_env / "models").exists()  # refused before anything was written


def test_cli_train_with_too_few_samples_is_one_line_and_writes_no_model(cli_env: Path) -> None:
    write_market(cli_env / "data", "FEWUSDT", days=2)
    one_line_error(_train(cli_env, "FEWUSDT"), "FEWUSDT: only", "training needs at least 200")
    assert not list((cli_env / "models").rglob("*.onnx"))
    assert not list((cli_env / "models").rglob("*.json"))


def test_cli_all_reports_each_failed_symbol_on_one_line_and_trains_the_rest(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal must not wrap the error line
    monkeypatch.setenv("SYMBOLS", "OKAUSDT,MISUSDT")
    write_market(cli_env / "data", "OKAUSDT")
    res = invoke(
        "train", "--all", "--wf", "0", "--data-dir", str(cli_env / "data"), "--model-dir", str(cli_env / "m")
    )
    assert res.exit_code == 2, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "misusdt" in errors[0] and "file not found" in errors[0], res.stderr
    assert (cli_env / "m" / "okausdt" / "lgbm_filter.onnx").is_file()
    assert not (cli_env / "m" / "misusdt").exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_cli_deploy_refuses_a_corrupt_or_foreign_model(cli_env: Path) -> None:
    write_market(cli_env / "data", "DPCUSDT")
    assert _train(cli_env, "DPCUSDT", "--wf", "0", "--quiet", models="staging").exit_code == 0
    # --force: trained with --wf 0 the model fails the gate; this test is about the file checks.
    deploy = ("deploy", "--force", "--symbol", "DPCUSDT", "--from", str(cli_env / "staging"), "--model-dir")
    assert invoke(*deploy, str(cli_env / "models")).exit_code == 0
    live = cli_env / "models" / "dpcusdt"
    before = _snapshot(live)
    staged_onnx = cli_env / "staging" / "dpcusdt" / "lgbm_filter.onnx"
    staged_meta = staged_onnx.with_suffix(".json")
    good_onnx, good_meta = staged_onnx.read_bytes(), json.loads(staged_meta.read_text())

    staged_onnx.write_bytes(good_onnx[: len(good_onnx) // 2])  # truncated copy
    one_line_error(invoke(*deploy, str(cli_env / "models")), str(staged_onnx), "sha256 differs")
    assert _snapshot(live) == before

    garbage = b"not an onnx model"  # corrupt, with metadata that vouches for it
    staged_onnx.write_bytes(garbage)
    staged_meta.write_text(json.dumps({**good_meta, "onnx_sha256": hashlib.sha256(garbage).hexdigest()}))
    one_line_error(invoke(*deploy, str(cli_env / "models")), "refusing to save a corrupt lgbm ONNX model")
    assert _snapshot(live) == before

    staged_onnx.write_bytes(good_onnx)  # intact model, built for another feature schema
    staged_meta.write_text(json.dumps({**good_meta, "feature_schema_hash": "0" * 64}))
    one_line_error(invoke(*deploy, str(cli_env / "models")), "feature schema 000000000000", "retrain")
    assert _snapshot(live) == before


# ------------------------------------------------------------------ scripts/train_model.py


def test_train_script_keeps_the_spec_flags(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script("train_model.py")
    write_market(cli_env / "data", "SCRUSDT")
    tuned = cli_env / "tuned.json"
    tuned.write_text(json.dumps({"best_trial": {"params": {"n_estimators": 30}}}))
    dirs = ["--data-dir", str(cli_env / "data"), "--model-dir", str(cli_env / "models"), "--quiet"]
    argv = ["--symbol", "scrusdt", "--wf", "--wf-splits", "2", "--decay", "1.0", "--tuned-params", str(tuned)]
    assert script.main([*argv, *dirs]) == 0
    meta = json.loads((cli_env / "models" / "scrusdt" / "lgbm_filter.json").read_text())
    assert len(meta["walk_forward"]["folds"]) == 2 and meta["params"]["n_estimators"] == 30
    assert meta["dataset"]["decay"] == 1.0
    # --data without --symbol: the file's folder names the symbol; without --wf: final model only.
    data_file = data_path(cli_env / "data", "SCRUSDT")
    assert script.main(["--data", str(data_file), "--model-dir", str(cli_env / "m2"), "--quiet"]) == 0
    meta = json.loads((cli_env / "m2" / "scrusdt" / "lgbm_filter.json").read_text())
    assert meta["walk_forward"]["folds"] == [] and meta["data_file"] == str(data_file)
    capsys.readouterr()
    for bad, fragment in (
        (["--symbol", "SCRUSDT", "--all"], "mutually exclusive"),
        (["--data", str(data_file), "--all"], "--data and --all are mutually exclusive"),
        (["--symbol", "SCRUSDT", "--backend", "xgb"], "--backend='xgb'"),
        (["--symbol", "SCRUSDT", "--wf", "--wf-splits", "0"], "--wf-splits=0"),
    ):
        assert script.main(bad) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err


def test_train_script_maps_backend_words_and_folds(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlx`` is the SPEC's word for the neural backend; ``--wf`` without a value means 5 folds."""
    from perpbot.ml import training

    calls: list[dict[str, object]] = []

    def record(symbol: str, **kwargs: object) -> None:
        calls.append({"symbol": symbol, **kwargs})
        raise InsufficientDataError("stop here")  # the mapping is what this test checks

    monkeypatch.setattr(training, "train_symbol", record)
    script = load_script("train_model.py")
    for backend in ("mlx", "nn", "lgbm"):
        assert script.main(["--symbol", "XRPUSDT", "--backend", backend, "--wf", "--quiet"]) == 2
    assert script.main(["--symbol", "XRPUSDT", "--quiet"]) == 2
    assert [c["backend"] for c in calls] == ["nn", "nn", "lgbm", "lgbm"]
    assert [c["wf"] for c in calls] == [5, 5, 5, 0]


# ------------------------------------------------------------------ scripts/train_and_deploy.sh

STUB = """
import os, sys
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(" ".join(args) + "\\n")
if args[0] == "fetch":  # offline stand-in for the exchange download
    from pathlib import Path
    from perpbot.data.schema import data_path
    from perpbot.data.store import save_market
    from perpbot.data.synth import synth_market
    sym = args[args.index("--symbol") + 1]
    save_market(synth_market(20, 11, symbol=sym), data_path(Path(args[args.index("--data-dir") + 1]), sym))
    sys.exit(0)
from perpbot.cli.main import app
sys.argv = ["perpbot", *args]
app()
"""


@pytest.mark.slow
def test_train_and_deploy_script(cli_env: Path) -> None:
    import shutil
    import subprocess
    import sys

    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    script = Path(__file__).resolve().parents[2] / "scripts" / "train_and_deploy.sh"
    stub = cli_env / "stub.py"
    stub.write_text(STUB)
    log = cli_env / "calls.log"
    import os

    env = {
        **os.environ,
        "PERPBOT": f"{sys.executable} {stub}",
        "STUB_LOG": str(log),
        "TIME_WEIGHT_DECAY": "1.5",
        "DATA_DIR": str(cli_env / "not_this_data"),  # the flags below win over the environment
        "MODEL_DIR": str(cli_env / "not_these_models"),
    }
    dirs = ["--data-dir", str(cli_env / "data"), f"--model-dir={cli_env / 'models'}"]
    gated = subprocess.run(  # --wf 0: not validated, the gate fails and nothing is deployed
        ["bash", str(script), "lgbm", "--symbol", "SHLUSDT", *dirs, "0"],
        cwd=cli_env,
        env={**env, "STUB_LOG": str(cli_env / "gated.log")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert gated.returncode == 2 and "failed the deploy gate" in gated.stderr, gated.stdout + gated.stderr
    assert not (cli_env / "models" / "shlusdt" / "lgbm_filter.onnx").exists()
    shutil.rmtree(cli_env / "data")  # the script's first run fetches 365 days again
    for n in ("2", "0"):
        proc = subprocess.run(
            ["bash", str(script), "lgbm", "--symbol", "SHLUSDT", *dirs, "--force", n],
            cwd=cli_env,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("fetch --symbol SHLUSDT --days 365 --no-upsert")
    assert calls[1].startswith("train --symbol SHLUSDT --backend lgbm --wf 2 --decay 1.5")
    assert calls[2].startswith("deploy --symbol SHLUSDT --from")
    assert calls[3].startswith("fetch --symbol SHLUSDT --days 35 ") and "--no-upsert" not in calls[3]
    live = cli_env / "models" / "shlusdt"
    assert (live / "lgbm_filter.onnx").is_file()
    entries = json.loads((live / "training_log.json").read_text())
    assert len(entries) == 2 and entries[0]["wf_folds"] == 2 and entries[1]["wf_folds"] == 0  # history kept
    assert entries[0]["decay"] == 1.5
    assert not list((cli_env / "models").glob(".staging.*"))  # staging removed
    assert not (cli_env / "not_this_data").exists() and not (cli_env / "not_these_models").exists()
    bad = subprocess.run(
        ["bash", str(script), "--symbol", "SHLUSDT", "--all"],
        cwd=cli_env,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "mutually exclusive" in bad.stderr
