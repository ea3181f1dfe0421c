"""Start-up checks of the account and the symbols: refuse to trade on an account the bot would
misread, with one line naming the cause (``SetupError`` is a ``PerpbotError``: exit status 2).

Why refuse instead of fixing: switching the position mode or the multi-assets mode changes how an
account's *other* users (a person, another program) see their positions. The bot never changes
them silently; it says what to change.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from perpbot.errors import PerpbotError
from perpbot.exchange.errors import ExchangeError

log = logging.getLogger(__name__)

INVALID_KEY = -2015  # "Invalid API-key, IP, or permissions for action."
REJECTED_KEY = -2014  # "API-key format invalid."
BAD_SIGNATURE = -1022  # "Signature for this request is not valid." (wrong secret)
UNKNOWN_ROUTE = -5000  # a venue that does not serve the route (the simulator, for a few reads)

Call = Callable[..., Awaitable[Any]]


class SetupError(PerpbotError):
    """The account, the keys or the symbols cannot be traded as configured."""


async def check_keys_and_account(call: Call, env: str) -> float:
    """Keys valid with futures permission, one-way mode, single-asset mode, fees in USDT; returns
    the USDT wallet balance. ``call`` is ``BinanceRest.call``."""
    try:
        account = await call("fapiPrivateV2GetAccount")
    except ExchangeError as exc:
        if exc.code in (INVALID_KEY, REJECTED_KEY, BAD_SIGNATURE):
            raise SetupError(
                f"Binance refused the API key ({exc.code}): wrong key/secret for BINANCE_ENV={env}, "
                "the key lacks 'Enable Futures', or this IP is not whitelisted"
            ) from None
        raise
    if account.get("canTrade") is False:
        raise SetupError("the API key cannot trade USDT-M futures: enable 'Enable Futures' for this key")
    if env == "live":
        await check_key_permissions(call)
    dual = await call("fapiPrivateGetPositionSideDual")
    if dual.get("dualSidePosition") is True:
        raise SetupError(
            "the account is in hedge mode (dualSidePosition=true); perpbot needs one-way mode: "
            "switch it in Binance's futures preferences with no position open"
        )
    try:
        multi = await call("fapiPrivateGetMultiAssetsMargin")
    except ExchangeError as exc:
        if exc.code != UNKNOWN_ROUTE or env != "custom":
            raise
        log.warning("binance: this venue does not serve multiAssetsMargin; single-asset mode not verified")
        multi = {"multiAssetsMargin": False}
    if multi.get("multiAssetsMargin") is True:
        raise SetupError(
            "the account is in multi-assets margin mode; perpbot needs single-asset mode (USDT margin)"
        )
    await check_fee_asset(call, env)
    usdt = [a for a in account.get("assets", []) if a.get("asset") == "USDT"]
    balance = float(usdt[0].get("walletBalance", 0.0)) if usdt else 0.0
    if balance <= 0.0:
        raise SetupError("the futures wallet holds no USDT: transfer USDT to the USDT-M futures wallet")
    return balance


async def check_fee_asset(call: Call, env: str) -> None:
    """Commissions must be charged in USDT. With Binance's "BNB fee discount" on (``feeBurn``) and
    BNB in the futures wallet, every fill's commission is BNB (``N``/``commissionAsset``/income
    ``asset``); the bot books commissions as USDT amounts, so its net PnL, the daily-loss gate
    and the kill switch would disagree with the account's income by the whole fee. A custom
    venue (the simulator) charges USDT and is not asked; demo trading may not serve the route."""
    if env == "custom":
        return
    try:
        burn = await call("fapiPrivateGetFeeBurn")
    except ExchangeError as exc:
        if env == "live":
            raise
        log.warning("binance: feeBurn not readable on %s (%s); USDT commissions not verified", env, exc)
        return
    if burn.get("feeBurn") is True:
        raise SetupError(
            "BNB fee discount is on for USDT-M futures (feeBurn=true): commissions would be charged "
            "in BNB, which perpbot books as USDT; turn 'BNB fee discount' off for USDT-M futures"
        )


async def check_key_permissions(call: Call) -> None:
    """Live keys: futures enabled, withdrawals *not* (a leaked trading key must not be able to move
    funds out). Binance serves this on the spot API (``/sapi/v1/account/apiRestrictions``), which
    demo trading and custom venues do not have."""
    r = await call("sapiGetAccountApiRestrictions")
    if r.get("enableFutures") is False:
        raise SetupError("the API key cannot trade USDT-M futures: enable 'Enable Futures' for this key")
    if r.get("enableWithdrawals") is True:
        raise SetupError(
            "the API key can withdraw funds: create a key without 'Enable Withdrawals' "
            "(trading only, IP whitelist advised)"
        )


def check_symbols(info: dict[str, Any], symbols: list[str]) -> dict[str, dict[str, Any]]:
    """Every configured symbol exists in ``exchangeInfo`` as a TRADING USDT perpetual."""
    by_name = {str(s.get("symbol")): s for s in info.get("symbols", [])}
    for sym in symbols:
        entry = by_name.get(sym)
        if entry is None:
            raise SetupError(f"symbol {sym}: not listed in Binance USDT-M exchangeInfo")
        if entry.get("status") != "TRADING":
            raise SetupError(f"symbol {sym}: status {entry.get('status')!r}, not TRADING")
        if entry.get("contractType") not in (None, "PERPETUAL") or entry.get("marginAsset") not in (
            None,
            "USDT",
        ):
            raise SetupError(f"symbol {sym}: not a USDT-margined perpetual")
    return {s: by_name[s] for s in symbols}
