"""Configuration specification (SPEC §1, §14 "Config" rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from perpbot.cli.main import app
from perpbot.config import DEFAULT_SYMBOLS, SignalParams, load_config, parse_bool
from perpbot.errors import ConfigError


def cfg(**env: str):
    return load_config(env, env_file=None)


def test_symbols_csv_is_split_trimmed_and_ordered() -> None:
    assert cfg(SYMBOLS="XRPUSDT, TRXUSDT,,DOGEUSDT ").symbols == ("XRPUSDT", "TRXUSDT", "DOGEUSDT")


def test_symbol_back_compat_when_symbols_unset_or_empty() -> None:
    assert cfg(SYMBOL="XRPUSDT").symbols == ("XRPUSDT",)
    assert cfg(SYMBOLS="", SYMBOL="DOGEUSDT").symbols == ("DOGEUSDT",)


def test_default_symbols_are_the_three_product_defaults() -> None:
    assert cfg().symbols == DEFAULT_SYMBOLS == ("XRPUSDT", "TRXUSDT", "DOGEUSDT")


def test_spec_defaults_and_types() -> None:
    c = cfg(
        CORRELATION_SYMBOLS="BTCUSDT,ETHUSDT",
        MARGIN_MAX_RATIO="0.50",
        MARGIN_MIN_RATIO="0.20",
        MARGIN_DECAY_RATE="0.0006",
        LEVERAGE="10",
    )
    assert c.correlation.as_tuple() == ("BTCUSDT", "ETHUSDT")
    assert c.max_same_direction == 2
    assert (c.margin_max_ratio, c.margin_min_ratio, c.margin_decay_rate) == (0.5, 0.2, 0.0006)
    assert c.leverage == 10 and isinstance(c.leverage, int)
    assert c.ml_threshold == 0.55
    assert c.default_params == SignalParams(2.0, 2.0, 3, 25.0, 2.5)


def test_correlation_roles_follow_configured_order() -> None:
    c = cfg(CORRELATION_SYMBOLS="SOLUSDT,BNBUSDT")
    assert (c.correlation.btc, c.correlation.eth) == ("SOLUSDT", "BNBUSDT")


@pytest.mark.parametrize("value", ["BTCUSDT", "BTCUSDT,ETHUSDT,SOLUSDT", "", "BTCUSDT,BTCUSDT"])
def test_correlation_needs_exactly_two(value: str) -> None:
    with pytest.raises(ConfigError, match="CORRELATION_SYMBOLS"):
        cfg(CORRELATION_SYMBOLS=value)


def test_per_symbol_overrides_and_unknown_symbol_gets_globals() -> None:
    c = cfg(
        SYMBOLS="XRPUSDT,TRXUSDT",
        ATR_SL_MULT_XRPUSDT="1.5",
        ATR_TP_MULT_XRPUSDT="4.0",
        SIGNAL_THRESHOLD="4",
        ADX_THRESHOLD_TRXUSDT="0",
    )
    assert c.params_for("XRPUSDT") == SignalParams(1.5, 4.0, 4, 25.0, 2.5)
    assert c.params_for("TRXUSDT").adx_threshold == 0.0
    assert c.params_for("SOLUSDT") == c.default_params == SignalParams(2.0, 2.0, 4, 25.0, 2.5)


@pytest.mark.parametrize(
    ("env", "culprit"),
    [
        ({"LEVERAGE": "0"}, "LEVERAGE"),
        ({"LEVERAGE": "ten"}, "LEVERAGE"),
        ({"MARGIN_MIN_RATIO": "0.6", "MARGIN_MAX_RATIO": "0.5"}, "MARGIN_MIN_RATIO"),
        ({"MARGIN_MIN_RATIO": "0"}, "MARGIN_MIN_RATIO"),
        ({"ML_THRESHOLD": "1.5"}, "ML_THRESHOLD"),
        ({"ML_THRESHOLD": "0"}, "ML_THRESHOLD"),
        ({"NO_ML_FILTER": "maybe"}, "NO_ML_FILTER"),
        ({"SYMBOLS": "XRPUSDT,xrp-usd"}, "SYMBOLS"),
        ({"SYMBOLS": "XRPUSDT,XRPUSDT"}, "SYMBOLS"),
        ({"ATR_SL_MULT_XRPUSDT": "abc"}, "ATR_SL_MULT_XRPUSDT"),
        ({"ATR_TP_MULT": "-1"}, "ATR_TP_MULT"),
        ({"KLINE_INTERVAL": "1h"}, "KLINE_INTERVAL"),
        ({"ML_BACKENDS": "nn,xgb"}, "ML_BACKENDS"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(env: dict[str, str], culprit: str) -> None:
    with pytest.raises(ConfigError) as exc:
        cfg(**env)
    message = str(exc.value)
    assert message.startswith(culprit) and "\n" not in message


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("TRUE", True), ("Yes", True), ("0", False), ("", False)]
)
def test_no_ml_filter_boolish(raw: str, expected: bool) -> None:
    assert parse_bool("NO_ML_FILTER", raw) is expected
    assert cfg(NO_ML_FILTER=raw).no_ml_filter is expected


def test_risk_per_trade_is_accepted_and_ignored() -> None:
    assert cfg(RISK_PER_TRADE="0.02") == cfg()


def test_kill_switch_reset_flags() -> None:
    c = cfg(RESET_KILL_SWITCH_XRPUSDT="true", RESET_KILL_SWITCH_TRXUSDT="false")
    assert c.reset_kill_switch == frozenset({"XRPUSDT"})


def test_testnet_uses_alternate_keys() -> None:
    c = cfg(BINANCE_API_KEY="live", BINANCE_TESTNET_API_KEY="test", BINANCE_TESTNET="yes")
    assert c.testnet and c.api_key == "test"


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LEVERAGE=20\nSYMBOLS=DOGEUSDT\n")
    c = load_config({"LEVERAGE": "5"}, env_file=env_file)
    assert c.leverage == 5 and c.symbols == ("DOGEUSDT",)


def test_masked_view_never_shows_secrets() -> None:
    view = cfg(BINANCE_API_KEY="abcdef123456", BINANCE_API_SECRET="supersecret").masked()
    text = json.dumps(view)
    assert "abcdef123456" not in text and "supersecret" not in text


def test_cli_config_prints_per_symbol_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYMBOLS", "XRPUSDT,TRXUSDT")
    monkeypatch.setenv("ATR_SL_MULT_XRPUSDT", "1.5")
    monkeypatch.setenv("BINANCE_API_SECRET", "do-not-print-me")
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    assert view["per_symbol"]["XRPUSDT"]["atr_sl_mult"] == 1.5
    assert view["per_symbol"]["TRXUSDT"]["atr_sl_mult"] == 2.0
    assert "do-not-print-me" not in result.output


def test_cli_bad_config_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEVERAGE", "0")
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "LEVERAGE" in lines[0]


# --------------------------------------------------------------------------- issue 11 §1, §2


def test_a_mask_never_reveals_the_length() -> None:
    short = cfg(BINANCE_API_KEY="ab").masked()["api_key"]
    long = cfg(BINANCE_API_KEY="a" * 64).masked()["api_key"]
    assert short == long == "***"
    assert cfg().masked()["api_key"] == ""  # unset stays visibly unset


def test_url_credentials_are_masked_in_config_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BINANCE_FAPI_URL", "https://alice:s3cr3t-pw@proxy.example:8443/fapi")
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert "s3cr3t-pw" not in result.output and "alice" not in result.output
    assert json.loads(result.output)["fapi_url"] == "https://***@proxy.example:8443/fapi"
    assert cfg(BINANCE_FAPI_URL="http://127.0.0.1:9000").masked()["fapi_url"] == "http://127.0.0.1:9000"


def test_max_same_direction_above_the_position_limit_is_refused() -> None:
    assert cfg(MAX_SAME_DIRECTION="3").max_same_direction == 3
    with pytest.raises(ConfigError, match=r"MAX_SAME_DIRECTION=4.*position limit \(3\)"):
        cfg(MAX_SAME_DIRECTION="4")


def test_override_for_an_untraded_symbol_warns_in_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SYMBOLS", "XRPUSDT")
    monkeypatch.setenv("ATR_SL_MULT_FOOUSDT", "1.5")
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0
    assert "warning: per-symbol settings for FOOUSDT" in result.stderr
    assert cfg(SYMBOLS="XRPUSDT", ATR_SL_MULT_FOOUSDT="1.5").override_symbols == {"FOOUSDT"}


def test_default_threshold_mode_serves_the_trained_threshold_unless_ml_threshold_is_set() -> None:
    assert cfg().ml_threshold_mode == "model"
    assert cfg(ML_THRESHOLD="0.55").ml_threshold_mode == "config"  # the SPEC value, set explicitly
    assert cfg(ML_THRESHOLD="0.6", ML_THRESHOLD_MODE="model").ml_threshold_mode == "model"
    assert cfg(ML_THRESHOLD_MODE="config").ml_threshold_mode == "config"


def test_ml_allow_ungated_is_off_by_default() -> None:
    assert cfg().ml_allow_ungated is False
    assert cfg(ML_ALLOW_UNGATED="true").ml_allow_ungated is True
    with pytest.raises(ConfigError, match="ML_ALLOW_UNGATED"):
        cfg(ML_ALLOW_UNGATED="maybe")
