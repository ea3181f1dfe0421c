"""Start-up: every bad input is one line and exit 2; an unreachable exchange is retried."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from perpbot.config import load_config
from perpbot.exchange.binance.budget import WeightBudget
from perpbot.exchange.binance.checks import SetupError, check_symbols
from perpbot.exchange.binance.startup import connect_from_config
from perpbot.simulator import rest_account, server
from perpbot.simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET, SimulatorConfig
from perpbot.simulator.server import SimServer
from tests.contract.harness import SimulatorPool
from tests.support.cli import invoke, one_line_error

SIM_SYMBOLS = "XRPUSDT,BTCUSDT,ETHUSDT"


def _env(port: int, **extra: str) -> dict[str, str]:
    return {
        "BINANCE_ENV": "custom",
        "BINANCE_FAPI_URL": f"http://127.0.0.1:{port}",
        "BINANCE_WS_URL": f"ws://127.0.0.1:{port}",
        "BINANCE_API_KEY": DEFAULT_API_KEY,
        "BINANCE_API_SECRET": DEFAULT_API_SECRET,
        "SYMBOLS": "XRPUSDT",
        **extra,
    }


@pytest.fixture(scope="module")
def sim_port(sim_pool: SimulatorPool) -> Any:
    """One simulator for the read-only start-up checks of this module (they change nothing)."""
    sim = sim_pool.take("--symbols", SIM_SYMBOLS)
    yield sim.port
    sim_pool.release(sim)


def _set(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_check_exchange_passes_on_a_good_account(
    sim_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    _set(monkeypatch, _env(sim_port), tmp_path)
    result = invoke("check-exchange")
    assert result.exit_code == 0, result.output
    assert "custom" in result.output and "1000.00" in result.output


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        ({"BINANCE_API_KEY": "WrongKey123"}, ("-2015", "API key")),
        ({"BINANCE_API_SECRET": "WrongSecret123"}, ("-1022",)),
        ({"SYMBOLS": "DOGEUSDT"}, ("DOGEUSDT", "not listed")),
        ({"BINANCE_API_KEY": ""}, ("BINANCE_API_KEY",)),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    sim_port: int,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    extra: dict[str, str],
    fragments: tuple[str, ...],
) -> None:
    _set(monkeypatch, _env(sim_port, **extra), tmp_path)
    one_line_error(invoke("check-exchange"), *fragments)


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("BINANCE_FAPI_URL", "ftp://127.0.0.1:1"),
        ("BINANCE_WS_URL", "http://127.0.0.1:1"),
        ("BINANCE_ENV", ""),
    ],
)
def test_custom_urls_must_be_http_and_ws(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, name: str, url: str
) -> None:
    env = _env(1, **{name: url})
    if name == "BINANCE_ENV":
        env["BINANCE_ENV"] = "staging"
    _set(monkeypatch, env, tmp_path)
    one_line_error(invoke("check-exchange"), "BINANCE_ENV" if name == "BINANCE_ENV" else name)


def test_unreachable_exchange_is_retried_one_line_per_attempt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    _set(monkeypatch, _env(port), tmp_path)
    result = invoke("check-exchange", "--attempts", "3")
    assert result.exit_code == 2
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 3 and "Traceback" not in result.output
    assert all("unreachable (attempt" in x for x in lines[:2])
    assert lines[2].startswith("error: ") and "unreachable after 3 attempts" in lines[2]


# ----------------------------------------------------------------------- account modes (in process)


@pytest.fixture
async def patched_sim(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    """A simulator whose answer for one route is replaced (hedge mode, no futures permission):
    the simulator itself has no option for these account states."""
    started: list[SimServer] = []

    async def start(path: str, handler: Callable[..., Any]) -> SimServer:
        routes = [(m, p, handler if p == path else h, sec) for m, p, h, sec in server.ROUTES]
        monkeypatch.setattr(server, "ROUTES", routes)
        srv = SimServer(SimulatorConfig(symbols=("XRPUSDT", "BTCUSDT", "ETHUSDT"), days=3, speed=0.0))
        await srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.stop()


async def _connect(srv: SimServer) -> None:
    cfg = load_config(_env(srv.port), env_file=None)
    ex, _ = await connect_from_config(cfg, attempts=1, budget=WeightBudget())
    await ex.close()


async def test_hedge_mode_is_refused_never_changed(patched_sim: Callable[..., Any]) -> None:
    srv = await patched_sim("/fapi/v1/positionSide/dual", lambda s, p: {"dualSidePosition": True})
    with pytest.raises(SetupError, match="hedge mode"):
        await _connect(srv)


async def test_keys_without_futures_permission_are_refused(patched_sim: Callable[..., Any]) -> None:
    def no_trade(s: SimServer, p: Any) -> Any:
        return {**rest_account.account(s, p), "canTrade": False}

    srv = await patched_sim("/fapi/v2/account", no_trade)
    with pytest.raises(SetupError, match="Enable Futures"):
        await _connect(srv)


def test_symbol_not_trading_is_refused() -> None:
    info = {
        "symbols": [
            {"symbol": "XRPUSDT", "status": "SETTLING", "contractType": "PERPETUAL", "marginAsset": "USDT"}
        ]
    }
    with pytest.raises(SetupError, match="XRPUSDT: status 'SETTLING', not TRADING"):
        check_symbols(info, ["XRPUSDT"])
    info["symbols"][0]["status"] = "TRADING"
    assert list(check_symbols(info, ["XRPUSDT"])) == ["XRPUSDT"]


def test_other_refusals_at_start_up_are_one_line_too(
    sim_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A refusal that is not about the user's input (here a rate limit) still ends in one line."""
    import asyncio

    import aiohttp

    async def inject() -> None:
        async with aiohttp.ClientSession() as s:
            body = [{"kind": "rate_limit_burst", "count": 1, "endpoint": "/fapi/v2/account"}]
            async with s.post(f"http://127.0.0.1:{sim_port}/sim/faults", json=body) as r:
                assert r.status == 200

    asyncio.run(inject())
    _set(monkeypatch, _env(sim_port), tmp_path)
    one_line_error(invoke("check-exchange"), "-1003")


@pytest.mark.parametrize(
    ("restrictions", "multi_assets", "fee_burn", "refusal"),
    [
        ({"enableFutures": True, "enableWithdrawals": False, "ipRestrict": True}, False, False, None),
        ({"enableFutures": True, "enableWithdrawals": True}, False, False, "can withdraw"),
        ({"enableFutures": False, "enableWithdrawals": False}, False, False, "Enable Futures"),
        ({"enableFutures": True, "enableWithdrawals": False}, True, False, "multi-assets"),
        # "BNB fee discount" on: every commission is charged in BNB (``N``, income ``asset``),
        # which the bot would book as USDT amounts: its PnL would miss the fees
        ({"enableFutures": True, "enableWithdrawals": False}, False, True, "BNB fee discount"),
    ],
)
async def test_live_keys_must_trade_futures_never_withdraw_on_a_single_asset_account(
    monkeypatch: pytest.MonkeyPatch,
    restrictions: dict[str, bool],
    multi_assets: bool,
    fee_burn: bool,
    refusal: str | None,
) -> None:
    from perpbot.exchange.binance.adapter import BinanceExchange
    from perpbot.exchange.binance.ccxt_client import Credentials
    from perpbot.exchange.binance.checks import check_keys_and_account
    from perpbot.exchange.binance.environment import resolve_endpoints

    routes = [
        # the key's restrictions (live Binance only) and an account in either margin mode
        *(r for r in server.ROUTES if r[1] != "/fapi/v1/multiAssetsMargin"),
        ("GET", "/sapi/v1/account/apiRestrictions", lambda s, p: restrictions, "SIGNED"),
        ("GET", "/fapi/v1/multiAssetsMargin", lambda s, p: {"multiAssetsMargin": multi_assets}, "SIGNED"),
        ("GET", "/fapi/v1/feeBurn", lambda s, p: {"feeBurn": fee_burn}, "SIGNED"),
    ]
    monkeypatch.setattr(server, "ROUTES", routes)
    srv = SimServer(SimulatorConfig(symbols=("XRPUSDT",), days=3, speed=0.0))
    await srv.start()
    ep = resolve_endpoints("custom", f"http://127.0.0.1:{srv.port}", f"ws://127.0.0.1:{srv.port}")
    ex = BinanceExchange(ep, Credentials(srv.cfg.api_key, srv.cfg.api_secret), budget=WeightBudget())
    try:
        await ex.rest.sync_time()
        if refusal is None:
            assert await check_keys_and_account(ex.rest.call, "live") == pytest.approx(1000.0)
        else:
            with pytest.raises(SetupError, match=refusal):
                await check_keys_and_account(ex.rest.call, "live")
    finally:
        await ex.close()
        await srv.stop()
