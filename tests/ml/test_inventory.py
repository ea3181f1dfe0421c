"""``perpbot models``: per symbol and backend, servable or why not, and what it was trained on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from perpbot.data.schema import data_path, model_dir
from perpbot.data.store import save_market
from perpbot.data.synth import synth_market
from perpbot.ml.inventory import gate_verdict, model_status, models_inventory
from perpbot.ml.training import train_symbol
from tests.backtest.conftest import loose_config
from tests.support.cli import invoke


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inv")
    for sym in ("XRPUSDT", "TRXUSDT"):
        frame = synth_market(40, 11, symbol=sym)
        save_market(
            frame, data_path(root / "data", sym), closed_through_ms=int(frame.index.as_unit("ms").asi8[-1])
        )
        train_symbol(
            sym,
            data_dir=root / "data",
            model_dir=root / "models",
            config=loose_config((sym,)),
            wf=0,
            lgbm_overrides={"n_estimators": 20},
        )
    return root / "models"


def _meta_path(models: Path, sym: str) -> Path:
    return model_dir(models, sym) / "lgbm_filter.json"


def test_a_servable_model(trained: Path) -> None:
    meta = json.loads(_meta_path(trained, "XRPUSDT").read_text())
    created = datetime.fromisoformat(meta["created_at"])
    st = model_status(trained, "XRPUSDT", "lgbm", created + timedelta(days=2, hours=12))
    assert st.present and st.ok and st.problem is None and st.schema == "match"
    assert (
        st.train_start == meta["training_window"]["start"] and st.train_end == meta["training_window"]["end"]
    )
    assert st.threshold == pytest.approx(meta["operating_threshold"])
    assert st.age_days == pytest.approx(2.5)
    # Trained without walk-forward folds, so the deploy gate recorded "fail" (not validated).
    assert st.gate is not None and st.gate.startswith("fail") and "not validated" in st.gate
    nn = model_status(trained, "XRPUSDT", "nn", created)
    assert not nn.present and not nn.ok and nn.schema == "-"


def test_refused_models_say_why(trained: Path, tmp_path: Path) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained, models)
    # TRXUSDT: metadata for another feature schema; XRPUSDT: truncated ONNX.
    p = _meta_path(models, "TRXUSDT")
    meta = json.loads(p.read_text())
    meta["feature_schema_hash"] = "0" * 64
    p.write_text(json.dumps(meta))
    onnx = model_dir(models, "XRPUSDT") / "lgbm_filter.onnx"
    onnx.write_bytes(onnx.read_bytes()[:100])
    now = datetime.now(UTC)
    trx = model_status(models, "TRXUSDT", "lgbm", now)
    assert trx.present and not trx.ok and trx.schema == "mismatch" and "feature schema" in (trx.problem or "")
    xrp = model_status(models, "XRPUSDT", "lgbm", now)
    assert not xrp.ok and xrp.schema == "match" and "sha256" in (xrp.problem or "")


def test_gate_verdict_shapes() -> None:
    assert gate_verdict({}) is None
    assert gate_verdict({"gate": "pass"}) == "pass"
    assert gate_verdict({"gate": "fail", "gate_reason": "AUC 0.49"}) == "fail (AUC 0.49)"
    assert gate_verdict({"gate": {"verdict": "fail", "reason": "precision below baseline"}}) == (
        "fail (precision below baseline)"
    )


def test_models_command(trained: Path, tmp_path: Path) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(trained, models)
    p = _meta_path(models, "TRXUSDT")
    meta = json.loads(p.read_text())
    meta["gate"] = {"verdict": "fail", "reason": "AUC 0.48 not above 0.5 + noise"}
    p.write_text(json.dumps(meta))  # the ONNX hash binding is unaffected by extra metadata
    res = invoke("models", "--model-dir", str(models), "--symbols", "XRPUSDT,TRXUSDT,ADAUSDT")
    assert res.exit_code == 0, res.output
    rows = [
        line.split()
        for line in res.stdout.splitlines()
        if line.split()[:1] in (["XRPUSDT"], ["TRXUSDT"], ["ADAUSDT"])
    ]
    by = {(r[0], r[1]): r for r in rows if len(r) == 9}
    assert by[("XRPUSDT", "lgbm")][2] == "ok" and by[("XRPUSDT", "lgbm")][8] == "match"
    assert by[("XRPUSDT", "nn")][2] == "missing"
    assert by[("TRXUSDT", "lgbm")][5] == "fail"
    assert by[("ADAUSDT", "lgbm")][2] == "missing"
    assert "TRXUSDT lgbm: gate fail (AUC 0.48 not above 0.5 + noise)" in res.stdout
    assert len(models_inventory(models, ["XRPUSDT"], datetime.now(UTC))) == 2  # both backends listed
