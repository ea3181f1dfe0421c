"""``perpbot backtest`` options of issue 11 §3: capital, costs, kill-switch mode, trade charts,
and output a pipe can read (no wrapping at 80 columns)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perpbot.backtest.report import HONESTY_NOTE
from tests.support.cli import invoke, one_line_error


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("SYMBOLS", "SYMBOL", "NO_ML_FILTER", "ML_BACKENDS", "ML_THRESHOLD", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


def _bt(data_dir: Path, out: Path, *args: str):  # type: ignore[no-untyped-def]
    return invoke("backtest", "--data-dir", str(data_dir), "--out", str(out), "--quiet", "--no-ml", *args)


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (("--balance", "0"), "--balance"),
        (("--balance", "lots"), "--balance"),
        (("--balance", "inf"), "--balance"),
        (("--taker-fee", "-0.0001"), "--taker-fee"),
        (("--taker-fee", "0.05"), "--taker-fee"),  # 5 %: a typo for 0.0005
        (("--maker-fee", "nan"), "--maker-fee"),
        (("--slippage-bps", "two"), "--slippage-bps"),
        (("--slippage-bps", "-1"), "--slippage-bps"),
        (("--kill-switch", "sometimes"), "--kill-switch"),
        (("--kill-switch", "reset-after=0"), "--kill-switch"),
    ],
)
def test_bad_values_one_line_exit_2(
    synth_data_dir: Path, tmp_path: Path, args: tuple[str, ...], culprit: str
) -> None:
    out = tmp_path / "out"
    one_line_error(_bt(synth_data_dir, out, *args), culprit)
    assert not out.exists()  # refused before any work


def test_options_reach_the_run_and_the_report(synth_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _bt(
        synth_data_dir,
        out,
        "--symbols",
        "XRPUSDT,TRXUSDT",
        "--balance",
        "5000",
        "--taker-fee",
        "0.0004",
        "--maker-fee",
        "0.0001",
        "--slippage-bps",
        "2.5",
        "--kill-switch",
        "reset-after=2",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "metrics.json").read_text())
    p = doc["parameters"]
    assert p["initial_balance"] == 5000.0 and doc["portfolio"]["start_equity"] == 5000.0
    assert (p["sim"]["taker_fee"], p["sim"]["maker_fee"], p["sim"]["slippage_bps"]) == (0.0004, 0.0001, 2.5)
    assert p["kill_switch"] == "reset-after=2"
    assert set(p["kill_switch_blocked_signals"]) == {"XRPUSDT", "TRXUSDT"}
    for key in ("cagr_pct", "sortino", "calmar", "avg_duration_h", "long_trades", "short_trades"):
        assert key in doc["portfolio"]
    assert doc["buy_and_hold"]["per_symbol_return_pct"].keys() == {"XRPUSDT", "TRXUSDT"}
    for key in ("cagr_pct", "sortino", "calmar", "buy_and_hold", "units"):
        assert key in doc["definitions"], key
    assert "capital: 5,000.00 USDT at the start" in res.stdout
    for sym in ("xrpusdt", "trxusdt"):
        assert (out / f"trades_{sym}.png").is_file() and (out / f"trades_{sym}.html").is_file()
    # Piped output is not wrapped: the long honesty note is one line.
    assert HONESTY_NOTE in res.stdout.splitlines()


def test_costs_change_the_result(synth_data_dir: Path, tmp_path: Path) -> None:
    fees = []
    for k, fee in enumerate(("0", "0.001")):
        res = _bt(synth_data_dir, tmp_path / f"o{k}", "--taker-fee", fee, "--maker-fee", fee)
        assert res.exit_code == 0, res.output
        fees.append(json.loads((tmp_path / f"o{k}" / "metrics.json").read_text())["portfolio"]["fees"])
    assert fees[0] == 0.0 < fees[1]
