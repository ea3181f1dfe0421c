"""The fixed configuration variables (SPEC §1) and their typed check, on pydantic-core alone.

Why not a pydantic-settings ``BaseSettings`` class: importing pydantic-settings and building the
model cost ~0.15 s of every command's start-up (issue 13: a backtest's first candle within 0.4 s)
for a job done here by the very validators pydantic generates for ``int``, ``float`` and ``str``
fields: same lax coercions, same error messages (``tests/test_config_env.py`` compares both on
tricky values). It also reads only the mapping it is given, where ``BaseSettings`` read
``os.environ`` too, so a caller's explicit ``environ`` could pick up the shell's variables.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING

from perpbot.errors import ConfigError

if TYPE_CHECKING:
    from pydantic_core import SchemaValidator, ValidationError

# The fixed variables, typed: name -> (type, default), in the order they are validated (the first
# bad one is the one named). Strings stay strings where the SPEC has its own parsing rule.
ENV_FIELDS: dict[str, tuple[type, str | int | float]] = {
    "BINANCE_API_KEY": (str, ""),
    "BINANCE_API_SECRET": (str, ""),
    "BINANCE_TESTNET_API_KEY": (str, ""),
    "BINANCE_TESTNET_API_SECRET": (str, ""),
    "BINANCE_TESTNET": (str, ""),
    "SYMBOLS": (str, ""),
    "SYMBOL": (str, ""),
    "CORRELATION_SYMBOLS": (str, "BTCUSDT,ETHUSDT"),
    "LEVERAGE": (int, 10),
    "MAX_SAME_DIRECTION": (int, 2),
    "MARGIN_MAX_RATIO": (float, 0.50),
    "MARGIN_MIN_RATIO": (float, 0.20),
    "MARGIN_DECAY_RATE": (float, 0.0006),
    "ML_THRESHOLD": (float, 0.55),
    "ML_THRESHOLD_MODE": (str, ""),  # empty: "model", unless ML_THRESHOLD is set (then "config")
    "ML_ALLOW_UNGATED": (str, ""),
    "ML_BACKENDS": (str, "nn,lgbm"),
    "NO_ML_FILTER": (str, ""),
    "DISCORD_WEBHOOK_URL": (str, ""),
    "RISK_PER_TRADE": (str, ""),  # obsolete (SPEC §1): accepted and ignored
    "TIME_WEIGHT_DECAY": (float, 2.0),
    "ATR_SL_MULT": (float, 2.0),
    "ATR_TP_MULT": (float, 2.0),
    "SIGNAL_THRESHOLD": (int, 3),
    "ADX_THRESHOLD": (float, 25.0),
    "VOL_MULTIPLIER": (float, 2.5),
    "KLINE_INTERVAL": (str, "15m"),
    "TAKER_FEE": (float, 0.0005),
    "MAKER_FEE": (float, 0.0002),
    "SLIPPAGE_BPS": (float, 1.0),
    "BINANCE_FAPI_URL": (str, ""),
    "BINANCE_WS_URL": (str, ""),
    "BINANCE_ENV": (str, ""),
}


@functools.cache
def _env_validator() -> SchemaValidator:
    """The typed check of :data:`ENV_FIELDS` (module docstring), built once per process."""
    from pydantic_core import SchemaValidator
    from pydantic_core import core_schema as cs

    kinds = {int: cs.int_schema, float: cs.float_schema, str: cs.str_schema}
    fields = {
        name: cs.typed_dict_field(cs.with_default_schema(kinds[kind](), default=default), required=False)
        for name, (kind, default) in ENV_FIELDS.items()
    }
    return SchemaValidator(cs.typed_dict_schema(fields, extra_behavior="ignore"))


def validate_env(env: Mapping[str, str]) -> SimpleNamespace:
    """The fixed variables of ``env``, typed (attributes named as the variables); ``ConfigError``
    naming the first bad one.

    When every variable given is a plain string for a string variable (no numeric one is set, as
    in a configuration that keeps the SPEC's numbers), the validator would return the defaults and
    those strings unchanged; they are then returned without importing pydantic-core (~50 ms of a
    command's start-up, issue 13). Tested against the validator."""
    given = {k: v for k, v in env.items() if k in ENV_FIELDS}
    if all(ENV_FIELDS[k][0] is str and type(v) is str for k, v in given.items()):
        return SimpleNamespace(**{k: given.get(k, default) for k, (_, default) in ENV_FIELDS.items()})
    from pydantic_core import ValidationError

    try:
        values = _env_validator().validate_python(given)
    except ValidationError as exc:
        raise _first_validation_error(exc, env) from None
    return SimpleNamespace(**values)


def _first_validation_error(exc: ValidationError, env: Mapping[str, str]) -> ConfigError:
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err.get("loc") else "?"
    return ConfigError(f"{name}={env.get(name, '')!r}: {err['msg']}")
