"""Configuration (SPEC §1): read once from the environment and ``.env``, validated, then frozen.

Why a two-layer design: the fixed variables are type-checked (``config_env.validate_env``), while the
per-symbol overrides (``ATR_SL_MULT_XRPUSDT=1.5``) and the kill-switch resets
(``RESET_KILL_SWITCH_XRPUSDT=true``) have names that depend on the symbol list, so they are read
from the same merged environment afterwards. The result is one immutable ``AppConfig`` shared
read-only by every bot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from perpbot.config_env import validate_env
from perpbot.errors import ConfigError
from perpbot.exchange.binance.environment import ENVIRONMENTS, resolve_endpoints
from perpbot.symbols import normalize_symbol

# Fixed constants of the design (SPEC §1); not configurable on purpose.
MAX_POSITIONS = 3
MAX_DAILY_LOSS = 0.05
MIN_NOTIONAL = 5.0

DEFAULT_SYMBOLS = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

# The five parameters that may be overridden per symbol as <PARAM>_<SYMBOL>.
PER_SYMBOL_PARAMS = ("ATR_SL_MULT", "ATR_TP_MULT", "SIGNAL_THRESHOLD", "ADX_THRESHOLD", "VOL_MULTIPLIER")


def parse_bool(name: str, raw: str | bool | None) -> bool:
    """SPEC's bool-ish rule: 1/true/yes (any case) is on; an unrecognised word is an error."""
    if isinstance(raw, bool):
        return raw
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: expected one of 1/true/yes/on or 0/false/no/off")


def parse_csv(raw: str | None) -> list[str]:
    """Split on commas, trim, drop empty items, keep order."""
    return [item.strip() for item in (raw or "").split(",") if item.strip()]


@dataclass(frozen=True, slots=True)
class SignalParams:
    """Strategy parameters that may differ per symbol (SPEC §1 later additions)."""

    atr_sl_mult: float = 2.0
    atr_tp_mult: float = 2.0
    signal_threshold: int = 3
    adx_threshold: float = 25.0
    vol_multiplier: float = 2.5

    def as_dict(self) -> dict[str, float | int]:
        return {
            "atr_sl_mult": self.atr_sl_mult,
            "atr_tp_mult": self.atr_tp_mult,
            "signal_threshold": self.signal_threshold,
            "adx_threshold": self.adx_threshold,
            "vol_multiplier": self.vol_multiplier,
        }


@dataclass(frozen=True, slots=True)
class CorrelationMap:
    """The two auxiliary symbols mapped explicitly to their feature roles (SPEC §1, §13 row 29).

    Data files store their candles with the role suffixes ``_btc`` and ``_eth`` whatever the
    configured symbols are, so changing ``CORRELATION_SYMBOLS`` never silently drops features.
    """

    btc: str = "BTCUSDT"
    eth: str = "ETHUSDT"

    def as_tuple(self) -> tuple[str, str]:
        return (self.btc, self.eth)


@dataclass(frozen=True, slots=True)
class AppConfig:
    """Effective, validated configuration shared read-only by all bots."""

    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    correlation: CorrelationMap = field(default_factory=CorrelationMap)
    leverage: int = 10
    max_same_direction: int = 2
    margin_max_ratio: float = 0.50
    margin_min_ratio: float = 0.20
    margin_decay_rate: float = 0.0006
    ml_threshold: float = 0.55
    # "config": always ML_THRESHOLD; "model": the operating threshold stored with the model
    # (falls back to ML_THRESHOLD when the model has none). SPEC §13 gap: the tuned threshold
    # was never used; here it is one switch away.
    ml_threshold_mode: str = "config"
    ml_backends: tuple[str, ...] = ("nn", "lgbm")
    # Serve a model whose metadata says it failed the deploy gate (issue 11 §2); off by default.
    ml_allow_ungated: bool = False
    no_ml_filter: bool = False
    discord_webhook_url: str = ""
    time_weight_decay: float = 2.0
    kline_interval: str = "15m"
    testnet: bool = False
    api_key: str = ""
    api_secret: str = ""
    taker_fee: float = 0.0005
    maker_fee: float = 0.0002
    slippage_bps: float = 1.0
    fapi_url: str = ""
    # live | demo | custom (BINANCE_ENV; BINANCE_TESTNET=true means demo); custom uses the URLs.
    binance_env: str = "live"
    ws_url: str = ""
    default_params: SignalParams = field(default_factory=SignalParams)
    symbol_params: Mapping[str, SignalParams] = field(default_factory=dict)
    reset_kill_switch: frozenset[str] = frozenset()
    # Symbols named by a per-symbol override (ATR_SL_MULT_<SYM>, …), traded or not: a command
    # warns when one of them is not among the symbols it runs (likely a typo or a stale line).
    override_symbols: frozenset[str] = frozenset()

    def params_for(self, symbol: str) -> SignalParams:
        """Per-symbol strategy parameters; an unknown symbol gets the global values."""
        return self.symbol_params.get(symbol.upper(), self.default_params)

    def with_symbols(self, symbols: list[str] | tuple[str, ...]) -> AppConfig:
        """Same configuration for another symbol list (CLI ``--symbol``), overrides recomputed lazily."""
        syms = tuple(normalize_symbol(s, source="--symbol") for s in symbols)
        return replace(self, symbols=syms)

    def masked(self) -> dict[str, Any]:
        """A printable view with secrets masked (never log or print secrets)."""

        def mask(v: str) -> str:
            return "" if not v else "***"  # never the length: it narrows a guess

        return {
            "symbols": list(self.symbols),
            "correlation": {"btc_role": self.correlation.btc, "eth_role": self.correlation.eth},
            "leverage": self.leverage,
            "max_positions": MAX_POSITIONS,
            "max_same_direction": self.max_same_direction,
            "max_daily_loss": MAX_DAILY_LOSS,
            "margin_max_ratio": self.margin_max_ratio,
            "margin_min_ratio": self.margin_min_ratio,
            "margin_decay_rate": self.margin_decay_rate,
            "ml_threshold": self.ml_threshold,
            "ml_threshold_mode": self.ml_threshold_mode,
            "ml_allow_ungated": self.ml_allow_ungated,
            "ml_backends": list(self.ml_backends),
            "no_ml_filter": self.no_ml_filter,
            "kline_interval": self.kline_interval,
            "testnet": self.testnet,
            "taker_fee": self.taker_fee,
            "maker_fee": self.maker_fee,
            "slippage_bps": self.slippage_bps,
            "time_weight_decay": self.time_weight_decay,
            "api_key": mask(self.api_key),
            "api_secret": mask(self.api_secret),
            "discord_webhook_url": mask(self.discord_webhook_url),
            "fapi_url": mask_url(self.fapi_url),
            "binance_env": self.binance_env,
            "ws_url": mask_url(self.ws_url),
            "reset_kill_switch": sorted(self.reset_kill_switch),
        }


def mask_url(url: str) -> str:
    """``https://user:pw@host/x`` → ``https://***@host/x``: credentials in a URL are secrets too."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "***" if "@" in url else url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def _merged_env(environ: Mapping[str, str] | None, env_file: Path | None) -> dict[str, str]:
    """The process environment wins over ``.env`` (python-dotenv semantics)."""
    merged: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        from dotenv import dotenv_values  # only when there is a file to read (start-up time)

        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def _override(env: Mapping[str, str], name: str, symbol: str, base: float, kind: type) -> float | int:
    key = f"{name}_{symbol}"
    if key not in env or env[key].strip() == "":
        return base
    raw = env[key]
    try:
        return kind(raw) if kind is float else int(raw.strip())
    except ValueError:
        raise ConfigError(
            f"{key}={raw!r}: expected {'a number' if kind is float else 'an integer'}"
        ) from None


def _validate_params(p: SignalParams, where: str) -> None:
    if p.atr_sl_mult <= 0:
        raise ConfigError(f"ATR_SL_MULT{where}={p.atr_sl_mult!r}: must be > 0")
    if p.atr_tp_mult <= 0:
        raise ConfigError(f"ATR_TP_MULT{where}={p.atr_tp_mult!r}: must be > 0")
    if p.signal_threshold < 1:
        raise ConfigError(f"SIGNAL_THRESHOLD{where}={p.signal_threshold!r}: must be >= 1")
    if p.adx_threshold < 0:
        raise ConfigError(f"ADX_THRESHOLD{where}={p.adx_threshold!r}: must be >= 0 (0 disables)")
    if p.vol_multiplier <= 0:
        raise ConfigError(f"VOL_MULTIPLIER{where}={p.vol_multiplier!r}: must be > 0")


def _binance_env(raw: str, testnet: bool) -> str:
    """``BINANCE_ENV`` wins; unset, ``BINANCE_TESTNET`` truthy means demo. A contradiction is refused."""
    env = raw.strip().lower()
    if not env:
        return "demo" if testnet else "live"
    if env not in ENVIRONMENTS:
        raise ConfigError(f"BINANCE_ENV={raw!r}: expected one of {', '.join(ENVIRONMENTS)}")
    if testnet and env != "demo":
        raise ConfigError(f"BINANCE_ENV={raw!r} contradicts BINANCE_TESTNET=true (which means demo)")
    return env


def load_config(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> AppConfig:
    """Build the validated configuration; raise ``ConfigError`` naming the first bad variable."""
    env = _merged_env(environ, env_file)
    s = validate_env(env)

    raw_symbols = parse_csv(s.SYMBOLS)
    if raw_symbols:
        symbols = tuple(normalize_symbol(x, source="SYMBOLS") for x in raw_symbols)
    elif s.SYMBOL.strip():
        symbols = (normalize_symbol(s.SYMBOL, source="SYMBOL"),)  # SPEC §1 back-compat rule
    else:
        symbols = DEFAULT_SYMBOLS
    if len(set(symbols)) != len(symbols):
        raise ConfigError(f"SYMBOLS={s.SYMBOLS!r}: a symbol is listed twice")

    corr = [normalize_symbol(x, source="CORRELATION_SYMBOLS") for x in parse_csv(s.CORRELATION_SYMBOLS)]
    if len(corr) != 2 or corr[0] == corr[1]:
        raise ConfigError(
            f"CORRELATION_SYMBOLS={s.CORRELATION_SYMBOLS!r}: need exactly two different symbols "
            "(first = BTC role, second = ETH role)"
        )
    clash = set(corr) & set(symbols)
    if clash:
        raise ConfigError(f"CORRELATION_SYMBOLS={s.CORRELATION_SYMBOLS!r}: {sorted(clash)[0]} is also traded")

    if s.LEVERAGE < 1 or s.LEVERAGE > 125:
        raise ConfigError(f"LEVERAGE={env.get('LEVERAGE', s.LEVERAGE)!r}: must be between 1 and 125")
    if not (1 <= s.MAX_SAME_DIRECTION <= MAX_POSITIONS):
        raise ConfigError(
            f"MAX_SAME_DIRECTION={s.MAX_SAME_DIRECTION!r}: must be between 1 and the position limit "
            f"({MAX_POSITIONS})"
        )
    if not (0 < s.MARGIN_MIN_RATIO <= s.MARGIN_MAX_RATIO <= 1):
        raise ConfigError(
            f"MARGIN_MIN_RATIO={s.MARGIN_MIN_RATIO!r}, MARGIN_MAX_RATIO={s.MARGIN_MAX_RATIO!r}: "
            "need 0 < MARGIN_MIN_RATIO <= MARGIN_MAX_RATIO <= 1"
        )
    if s.MARGIN_DECAY_RATE < 0:
        raise ConfigError(f"MARGIN_DECAY_RATE={s.MARGIN_DECAY_RATE!r}: must be >= 0")
    if not (0 < s.ML_THRESHOLD <= 1):
        raise ConfigError(f"ML_THRESHOLD={s.ML_THRESHOLD!r}: must be in (0, 1]")
    mode = s.ML_THRESHOLD_MODE.strip().lower()
    if not mode:
        # Default: serve the threshold the model was trained and validated at, unless the user set
        # the SPEC's ML_THRESHOLD explicitly (issue 11 §2: trained == served threshold).
        mode = "config" if env.get("ML_THRESHOLD", "").strip() else "model"
    if mode not in ("config", "model"):
        raise ConfigError(f"ML_THRESHOLD_MODE={s.ML_THRESHOLD_MODE!r}: expected 'config' or 'model'")
    backends = tuple(b.lower() for b in parse_csv(s.ML_BACKENDS))
    bad = [b for b in backends if b not in ("nn", "lgbm")]
    if bad or not backends:
        raise ConfigError(f"ML_BACKENDS={s.ML_BACKENDS!r}: expected a priority list of nn and lgbm")
    if s.KLINE_INTERVAL != "15m":
        raise ConfigError(f"KLINE_INTERVAL={s.KLINE_INTERVAL!r}: only 15m is supported")
    for name in ("TAKER_FEE", "MAKER_FEE", "SLIPPAGE_BPS"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{name}={getattr(s, name)!r}: must be >= 0")

    no_ml = parse_bool("NO_ML_FILTER", s.NO_ML_FILTER)
    allow_ungated = parse_bool("ML_ALLOW_UNGATED", s.ML_ALLOW_UNGATED)
    testnet = parse_bool("BINANCE_TESTNET", s.BINANCE_TESTNET)
    binance_env = _binance_env(s.BINANCE_ENV, testnet)
    testnet = binance_env == "demo"  # demo trading has its own key pair (SPEC §1 BINANCE_TESTNET)
    if binance_env == "custom":
        resolve_endpoints(binance_env, s.BINANCE_FAPI_URL, s.BINANCE_WS_URL)

    default = SignalParams(
        atr_sl_mult=s.ATR_SL_MULT,
        atr_tp_mult=s.ATR_TP_MULT,
        signal_threshold=s.SIGNAL_THRESHOLD,
        adx_threshold=s.ADX_THRESHOLD,
        vol_multiplier=s.VOL_MULTIPLIER,
    )
    _validate_params(default, "")

    # Overrides for every symbol that names one in the environment, traded or not, so that a
    # CLI run for another symbol (`--symbol TRXUSDT`) still sees its own overrides.
    named: set[str] = set()
    for key in env:
        for name in PER_SYMBOL_PARAMS:
            if key.startswith(name + "_") and key.endswith("USDT") and env[key].strip():
                named.add(key[len(name) + 1 :])
    override_symbols = set(symbols) | named
    per_symbol: dict[str, SignalParams] = {}
    for sym in sorted(override_symbols):
        p = SignalParams(
            atr_sl_mult=float(_override(env, "ATR_SL_MULT", sym, default.atr_sl_mult, float)),
            atr_tp_mult=float(_override(env, "ATR_TP_MULT", sym, default.atr_tp_mult, float)),
            signal_threshold=int(_override(env, "SIGNAL_THRESHOLD", sym, default.signal_threshold, int)),
            adx_threshold=float(_override(env, "ADX_THRESHOLD", sym, default.adx_threshold, float)),
            vol_multiplier=float(_override(env, "VOL_MULTIPLIER", sym, default.vol_multiplier, float)),
        )
        _validate_params(p, f"_{sym}")
        if p != default:
            per_symbol[sym] = p

    resets = frozenset(
        key[len("RESET_KILL_SWITCH_") :]
        for key, value in env.items()
        if key.startswith("RESET_KILL_SWITCH_") and parse_bool(key, value)
    )

    key, secret = (
        (s.BINANCE_TESTNET_API_KEY, s.BINANCE_TESTNET_API_SECRET)
        if testnet
        else (s.BINANCE_API_KEY, s.BINANCE_API_SECRET)
    )
    return AppConfig(
        symbols=symbols,
        correlation=CorrelationMap(btc=corr[0], eth=corr[1]),
        leverage=s.LEVERAGE,
        max_same_direction=s.MAX_SAME_DIRECTION,
        margin_max_ratio=s.MARGIN_MAX_RATIO,
        margin_min_ratio=s.MARGIN_MIN_RATIO,
        margin_decay_rate=s.MARGIN_DECAY_RATE,
        ml_threshold=s.ML_THRESHOLD,
        ml_threshold_mode=mode,
        ml_backends=backends,
        ml_allow_ungated=allow_ungated,
        no_ml_filter=no_ml,
        discord_webhook_url=s.DISCORD_WEBHOOK_URL,
        time_weight_decay=s.TIME_WEIGHT_DECAY,
        kline_interval=s.KLINE_INTERVAL,
        testnet=testnet,
        api_key=key,
        api_secret=secret,
        taker_fee=s.TAKER_FEE,
        maker_fee=s.MAKER_FEE,
        slippage_bps=s.SLIPPAGE_BPS,
        fapi_url=s.BINANCE_FAPI_URL.strip(),
        binance_env=binance_env,
        ws_url=s.BINANCE_WS_URL.strip(),
        default_params=default,
        symbol_params=per_symbol,
        reset_kill_switch=resets,
        override_symbols=frozenset(named),
    )
