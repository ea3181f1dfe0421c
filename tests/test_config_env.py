"""The fixed variables' typed check (``config_env``) accepts, converts and refuses exactly what
the pydantic-settings class it replaced did, with the same first error (issue 13: the lighter
check saves ~0.15 s of every command's start-up; it must not change behaviour)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError, create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from perpbot.config import load_config
from perpbot.config_env import ENV_FIELDS, validate_env
from perpbot.errors import ConfigError


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=True)


# The class ``config.py`` had before: the same fields, types and defaults on ``BaseSettings``.
Reference: Any = create_model("Reference", __base__=_Base, **{n: (t, d) for n, (t, d) in ENV_FIELDS.items()})

TRICKY = {
    int: [
        "10",
        "+10",
        " 10 ",
        "10.0",
        "10.5",
        "1e1",
        "1_000",
        "0x10",
        "",
        "abc",
        "-3",
        "１０",
        "nan",
        "9" * 30,
    ],
    float: [
        "0.5",
        " 0.5 ",
        "1e-3",
        "nan",
        "inf",
        "-inf",
        "1_0.5",
        "",
        ".5",
        "5.",
        "abc",
        "0x1p-2",
        "true",
        "1,5",
    ],
    str: ["", " x ", "1", "é", "a,b"],
}


@pytest.fixture(autouse=True)
def _no_shell_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reference reads os.environ as well; the comparison must see the given mapping only.
    for name in ENV_FIELDS:
        monkeypatch.delenv(name, raising=False)


def _reference(env: dict[str, str]) -> dict[str, Any] | str:
    try:
        return Reference(**env).model_dump()
    except ValidationError as exc:
        err = exc.errors()[0]
        return f"{err['loc'][0]}: {err['msg']}"


def _light(env: dict[str, str]) -> dict[str, Any] | str:
    try:
        return vars(validate_env(env))
    except ConfigError as exc:
        name, _, rest = str(exc).partition("=")
        return f"{name}: {rest.split(': ', 1)[1]}"


def _same(a: object, b: object) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def test_defaults_are_the_reference_defaults() -> None:
    assert _same(_light({}), _reference({}))


@pytest.mark.parametrize("name", ["LEVERAGE", "SIGNAL_THRESHOLD", "MARGIN_MAX_RATIO", "TAKER_FEE", "SYMBOLS"])
def test_every_tricky_value_is_taken_or_refused_as_before(name: str) -> None:
    for raw in TRICKY[ENV_FIELDS[name][0]]:
        light, ref = _light({name: raw}), _reference({name: raw})
        assert _same(light, ref), (name, raw, light, ref)


def test_the_first_bad_variable_named_is_the_same() -> None:
    env = {"MARGIN_MAX_RATIO": "y", "LEVERAGE": "x", "SLIPPAGE_BPS": "z"}
    assert _light(env) == _reference(env)
    assert str(_light(env)).startswith("LEVERAGE: ")


def test_the_shell_environment_does_not_leak_into_an_explicit_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEVERAGE", "7")
    assert load_config(environ={}, env_file=None).leverage == 10
    assert load_config(env_file=None).leverage == 7


def test_a_bad_value_is_one_line_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^LEVERAGE='ten': Input should be a valid integer"):
        load_config(environ={"LEVERAGE": "ten"}, env_file=None)


STRING_ONLY = [
    {},
    {"SYMBOLS": "XRPUSDT,TRXUSDT", "BINANCE_API_KEY": " k ", "ML_BACKENDS": ""},
    {"SYMBOLS": "XRP\udcffUSDT", "DISCORD_WEBHOOK_URL": "é", "KLINE_INTERVAL": "1h", "OTHER": "x"},
]


@pytest.mark.parametrize("env", STRING_ONLY)
def test_string_only_settings_skip_the_validator_with_its_very_result(env: dict[str, str]) -> None:
    # validate_env returns these without pydantic-core (issue 13): exactly what the validator gives.
    from perpbot.config_env import _env_validator

    want = _env_validator().validate_python({k: v for k, v in env.items() if k in ENV_FIELDS})
    assert _same(vars(validate_env(env)), want)
    assert list(vars(validate_env(env))) == list(ENV_FIELDS)


def test_a_numeric_variable_or_a_non_plain_string_goes_through_the_validator() -> None:
    class Text(str):
        pass

    assert type(validate_env({"SYMBOLS": Text("XRPUSDT")}).SYMBOLS) is str  # the validator's copy
    assert validate_env({"LEVERAGE": " 5 ", "SYMBOLS": "XRPUSDT"}).LEVERAGE == 5
    with pytest.raises(ConfigError, match=r"^SYMBOLS=5: Input should be a valid string"):
        validate_env({"SYMBOLS": 5})  # type: ignore[dict-item]


def test_string_only_settings_do_not_import_pydantic_core() -> None:
    import subprocess
    import sys

    src = (
        "import sys\nfrom perpbot.config_env import validate_env\n"
        "validate_env({'SYMBOLS': 'XRPUSDT'})\nprint('pydantic_core' in sys.modules)\n"
        "validate_env({'LEVERAGE': '5'})\nprint('pydantic_core' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr
