"""Deployment (``perpbot.ml.deploy``): replaces the symbol's files atomically, verifies every
symbol before writing any (all or none), touches only the staged backends, appends to the
training log, treats an identical model as a no-op and refuses a gate-failed model without force."""

from __future__ import annotations

from pathlib import Path

import pytest

from perpbot.errors import ModelError
from perpbot.ml import deploy as deploy_mod
from perpbot.ml.artifacts import read_model, save_model
from perpbot.ml.deploy import DeployPlan, deploy, deploy_all
from perpbot.ml.training_log import append_training_log, read_training_log
from tests.ml.test_artifacts import const_model, meta, snapshot

# --------------------------------------------------------------------------- deploy


def test_deploy_replaces_the_symbols_files_atomically(tmp_path: Path) -> None:
    staging, live = tmp_path / "staging", tmp_path / "models"
    save_model(live / "xrpusdt", "lgbm", const_model(0.1), meta(), native_text="old\n")
    save_model(live / "xrpusdt", "nn", const_model(0.2), meta("nn"))
    save_model(staging / "xrpusdt", "lgbm", const_model(0.6), meta(), native_text="new\n")
    append_training_log(staging / "xrpusdt", {"backend": "lgbm"})

    assert deploy(staging, live, "XRPUSDT") == ["lgbm"]
    dst = live / "xrpusdt"
    files = read_model(dst, "lgbm", with_native=True)
    assert files is not None and files.onnx_bytes == const_model(0.6) and files.native_text == "new\n"
    assert (dst / "lgbm_filter_prev.onnx").read_bytes() == const_model(0.1)
    # Issue 11 §1: deploying LightGBM never touches the neural model (no move to *_prev); the CLI
    # says it stays and that ML_BACKENDS decides which one is served.
    nn = read_model(dst, "nn")
    assert nn is not None and nn.onnx_bytes == const_model(0.2)
    assert not (dst / "nn_filter_prev.onnx").exists()
    assert [e["backend"] for e in read_training_log(dst)] == ["lgbm"]


def test_deploy_verifies_everything_before_writing(tmp_path: Path) -> None:
    staging, live = tmp_path / "staging", tmp_path / "models"
    save_model(live / "xrpusdt", "lgbm", const_model(0.1), meta())
    before = snapshot(live / "xrpusdt")
    save_model(staging / "xrpusdt", "lgbm", const_model(0.6), meta())
    save_model(staging / "xrpusdt", "nn", const_model(0.6), meta("nn"))
    (staging / "xrpusdt" / "nn_filter.onnx").write_bytes(const_model(0.7))  # inconsistent pair
    with pytest.raises(ModelError, match="sha256 differs"):
        deploy(staging, live, "XRPUSDT")
    assert snapshot(live / "xrpusdt") == before
    with pytest.raises(ModelError, match="nothing to deploy"):
        deploy(staging, live, "DOGEUSDT")


# --------------------------------------------------------------------------- deploy (issue 11 §1, §2)


def _stage(root: Path, sym: str, p: float, **extra: object) -> None:
    save_model(root / sym, "lgbm", const_model(p), meta(**extra), native_text=f"model {p}\n")


def test_deploy_all_validates_every_symbol_before_writing_any(tmp_path: Path) -> None:
    staging, live = tmp_path / "staging", tmp_path / "models"
    _stage(live, "xrpusdt", 0.1)
    _stage(live, "trxusdt", 0.1)
    before = {s: snapshot(live / s) for s in ("xrpusdt", "trxusdt")}
    _stage(staging, "xrpusdt", 0.6)  # fine
    _stage(staging, "trxusdt", 0.6)
    (staging / "trxusdt" / "lgbm_filter.txt").write_text("cut")  # the second symbol is broken
    with pytest.raises(ModelError, match=r"trxusdt/lgbm_filter.txt"):
        deploy_all(staging, live, ["XRPUSDT", "TRXUSDT"])
    assert {s: snapshot(live / s) for s in ("xrpusdt", "trxusdt")} == before


def test_deploy_all_restores_the_applied_symbols_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging, live = tmp_path / "staging", tmp_path / "models"
    for s in ("xrpusdt", "trxusdt"):
        _stage(live, s, 0.1)
        _stage(staging, s, 0.6)
    before = {s: snapshot(live / s) for s in ("xrpusdt", "trxusdt")}
    real = deploy_mod.apply_deploy

    def flaky(plan: DeployPlan) -> None:
        if plan.symbol == "TRXUSDT":
            raise OSError(28, "No space left on device")
        real(plan)

    monkeypatch.setattr(deploy_mod, "apply_deploy", flaky)
    with pytest.raises(ModelError, match="nothing deployed"):
        deploy_all(staging, live, ["XRPUSDT", "TRXUSDT"])
    after = {s: snapshot(live / s) for s in ("xrpusdt", "trxusdt")}
    assert {s: {k: v for k, v in f.items() if "_prev" not in k} for s, f in after.items()} == {
        s: {k: v for k, v in f.items() if "_prev" not in k} for s, f in before.items()
    }


def test_training_log_is_append_only_on_deploy(tmp_path: Path) -> None:
    staging, live = tmp_path / "staging", tmp_path / "models"
    _stage(live, "xrpusdt", 0.1)
    append_training_log(live / "xrpusdt", {"backend": "lgbm", "run": "old history"})
    _stage(staging, "xrpusdt", 0.6)
    append_training_log(staging / "xrpusdt", {"backend": "lgbm", "run": "new"})
    deploy(staging, live, "XRPUSDT")
    assert [e["run"] for e in read_training_log(live / "xrpusdt")] == ["old history", "new"]
    _stage(staging, "xrpusdt", 0.7)
    append_training_log(staging / "xrpusdt", {"backend": "lgbm", "run": "newer"})
    deploy(staging, live, "XRPUSDT")  # the staging log holds "new" again: not duplicated
    assert [e["run"] for e in read_training_log(live / "xrpusdt")] == ["old history", "new", "newer"]


def test_deploying_an_identical_model_is_a_no_op(tmp_path: Path) -> None:
    staging, live = tmp_path / "staging", tmp_path / "models"
    _stage(staging, "xrpusdt", 0.6)
    deploy(staging, live, "XRPUSDT")
    before = {p.name: p.stat().st_mtime_ns for p in (live / "xrpusdt").iterdir()}
    (plan,) = deploy_all(staging, live, ["XRPUSDT"])
    assert plan.no_op and plan.identical == ("lgbm",)
    assert {p.name: p.stat().st_mtime_ns for p in (live / "xrpusdt").iterdir()} == before
    assert not (live / "xrpusdt" / "lgbm_filter_prev.onnx").exists()


def test_deploy_refuses_a_gate_failed_model_without_force(tmp_path: Path) -> None:
    staging, live = tmp_path / "staging", tmp_path / "models"
    _stage(staging, "xrpusdt", 0.6, gate="fail", gate_reason="AUC within noise")
    with pytest.raises(ModelError, match=r"failed the deploy gate \(AUC within noise\).*--force"):
        deploy(staging, live, "XRPUSDT")
    assert not (live / "xrpusdt").exists()
    assert deploy(staging, live, "XRPUSDT", force=True) == ["lgbm"]


def test_cli_deploy_all_or_none_and_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.cli import invoke, one_line_error

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYMBOLS", "XRPUSDT,TRXUSDT")
    staging, live = tmp_path / "staging", tmp_path / "models"
    _stage(staging, "xrpusdt", 0.6)
    res = invoke("deploy", "--from", str(staging), "--all", "--model-dir", str(live))
    one_line_error(res, "trxusdt", "nothing to deploy")
    assert not (live / "xrpusdt").exists()  # XRPUSDT was valid, but all or none
    res = invoke("deploy", "--from", str(staging), "--symbol", "XRPUSDT", "--model-dir", str(live))
    assert res.exit_code == 0 and "XRPUSDT: deployed lgbm (gate N/A)" in res.stdout, res.output
    res = invoke("deploy", "--from", str(staging), "--symbols", "XRPUSDT", "--model-dir", str(live))
    assert res.exit_code == 0 and "already deployed (lgbm identical); nothing changed" in res.stdout
