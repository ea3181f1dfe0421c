"""From the configuration to a checked, connected adapter: the one start-up path of live mode.

Bad input stops start-up with one line naming the cause (``ConfigError`` / ``SetupError``, both
``PerpbotError``: exit status 2): missing keys, a non-http(s)/ws(s) custom URL, wrong keys,
keys without futures permission, hedge mode, multi-assets mode, a symbol missing or not TRADING.
An exchange that cannot be reached is not bad input: it is retried with exponential back-off,
one line per attempt, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from perpbot.config import AppConfig
from perpbot.errors import ConfigError
from perpbot.exchange.binance.adapter import BinanceExchange
from perpbot.exchange.binance.budget import WeightBudget
from perpbot.exchange.binance.ccxt_client import Credentials
from perpbot.exchange.binance.checks import SetupError
from perpbot.exchange.binance.environment import Endpoints, resolve_endpoints
from perpbot.exchange.errors import ExchangeError, ExchangeUnavailable

log = logging.getLogger(__name__)


def endpoints_from_config(cfg: AppConfig) -> Endpoints:
    return resolve_endpoints(cfg.binance_env, cfg.fapi_url, cfg.ws_url)


def credentials_from_config(cfg: AppConfig) -> Credentials:
    prefix = "BINANCE_TESTNET_API" if cfg.binance_env == "demo" else "BINANCE_API"
    if not cfg.api_key:
        raise ConfigError(f"{prefix}_KEY is empty: live and demo trading need an API key")
    if not cfg.api_secret:
        raise ConfigError(f"{prefix}_SECRET is empty: live and demo trading need the key's secret")
    return Credentials(cfg.api_key, cfg.api_secret)


async def connect_from_config(
    cfg: AppConfig,
    *,
    attempts: int | None = None,
    base_delay_s: float = 1.0,
    max_delay_s: float = 60.0,
    budget: WeightBudget | None = None,
    report: Callable[[str], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[BinanceExchange, float]:
    """A connected adapter and the USDT wallet balance; ``attempts`` None retries forever."""
    endpoints = endpoints_from_config(cfg)
    creds = credentials_from_config(cfg)
    symbols = [*cfg.symbols, *cfg.correlation.as_tuple()]
    rng = random.Random(0)
    attempt = 0
    while True:
        attempt += 1
        ex = BinanceExchange(endpoints, creds, budget=budget)
        try:
            balance = await ex.connect(symbols)
            return ex, balance
        except ExchangeUnavailable as exc:
            await ex.close()
            if attempts is not None and attempt >= attempts:
                raise SetupError(
                    f"Binance ({endpoints.env}, {endpoints.fapi}) unreachable after {attempt} attempts: "
                    f"{exc.message}"
                ) from None
            delay = min(base_delay_s * 2 ** (attempt - 1), max_delay_s) * (0.5 + rng.random())
            line = (
                f"binance: {endpoints.fapi} unreachable (attempt {attempt}"
                f"{'' if attempts is None else f'/{attempts}'}): {exc.message}; next try in {delay:.1f} s"
            )
            log.warning("%s", line)
            if report is not None:
                report(line)
            await sleep(delay)
        except ExchangeError as exc:
            await ex.close()
            raise SetupError(f"Binance ({endpoints.env}) refused a start-up check: {exc}") from None
        except BaseException:
            await ex.close()
            raise
