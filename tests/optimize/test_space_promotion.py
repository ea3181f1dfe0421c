"""The search space, the reproducible plan, and promotion into an .env the config reads back."""

from __future__ import annotations

from pathlib import Path

from perpbot.config import load_config
from perpbot.optimize import space
from perpbot.optimize.promotion import write_overrides


def test_plan_is_a_function_of_n_and_seed_and_inside_the_ranges() -> None:
    plan = space.qmc_plan(16, seed=5)
    assert plan == space.qmc_plan(16, seed=5)
    assert space.qmc_plan(8, seed=5) == plan[:8]
    assert space.qmc_plan(8, seed=6) != plan[:8]
    assert len({tuple(sorted(p.items())) for p in plan}) == 16
    for p in plan:
        for r in space.SPACE:
            assert r.low <= p[r.env_name] <= r.high


def test_promotion_merges_overrides_that_the_config_reads(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("LEVERAGE=5\nATR_SL_MULT_XRPUSDT=9.9\nATR_TP_MULT_TRXUSDT=1.5\n")
    values = {
        "ATR_SL_MULT": 1.2,
        "ATR_TP_MULT": 3.4,
        "SIGNAL_THRESHOLD": 4,
        "ADX_THRESHOLD": 12.0,
        "VOL_MULTIPLIER": 1.7,
    }
    written = write_overrides(env, "XRPUSDT", values)
    assert written["ATR_SL_MULT_XRPUSDT"] == "1.2"
    assert (tmp_path / ".env.prev").read_text().startswith("LEVERAGE=5")
    cfg = load_config(environ={}, env_file=env)
    assert cfg.leverage == 5
    assert space.from_signal_params(cfg.params_for("XRPUSDT")) == values
    assert cfg.params_for("TRXUSDT").atr_tp_mult == 1.5
    assert env.read_text().count("ATR_SL_MULT_XRPUSDT") == 1
