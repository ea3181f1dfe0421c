"""HTTP 418: a process that kept sending while told to back off is banned; the adapter stops
sending, raises one alert and refuses locally until the ban is over (no blind retry)."""

from __future__ import annotations

import pytest

from perpbot.exchange.binance.adapter import BinanceExchange
from perpbot.exchange.binance.budget import WeightBudget
from perpbot.exchange.binance.ccxt_client import Credentials
from perpbot.exchange.binance.environment import resolve_endpoints
from perpbot.exchange.errors import ExchangeError
from perpbot.simulator.config import SimulatorConfig
from perpbot.simulator.server import SimServer


async def test_418_stops_sending_alerts_once_and_refuses_until_the_ban_ends() -> None:
    srv = SimServer(SimulatorConfig(symbols=("XRPUSDT",), days=3, speed=0.0, weight_limit=40))
    await srv.start()
    ep = resolve_endpoints("custom", f"http://127.0.0.1:{srv.port}", f"ws://127.0.0.1:{srv.port}")
    creds = Credentials(srv.cfg.api_key, srv.cfg.api_secret)
    # Another process on the same IP (its own budget) spends the IP's weight and gets a 429 ...
    other = BinanceExchange(ep, creds, budget=WeightBudget())
    alerts: list[str] = []
    budget = WeightBudget(alert=alerts.append)
    ours = BinanceExchange(ep, creds, budget=budget)
    try:
        with pytest.raises(ExchangeError) as err:
            for _ in range(100):
                await other.balance()
        assert err.value.code == -1003
        # ... and we, not knowing, send during its back-off window: Binance bans the IP (418).
        with pytest.raises(ExchangeError) as err:
            await ours.balance()
        assert err.value.code == -1003 and len(alerts) == 1 and "418" in alerts[0]
        used = srv.limiter.state()["used_weight_1m"]
        for _ in range(3):
            with pytest.raises(ExchangeError) as err:
                await ours.balance()  # refused locally: nothing reaches the server
            assert err.value.code == -1003
        assert srv.limiter.state()["used_weight_1m"] == used and len(alerts) == 1
    finally:
        await other.close()
        await ours.close()
        await srv.stop()


async def test_budget_follows_binance_used_weight_header() -> None:
    srv = SimServer(SimulatorConfig(symbols=("XRPUSDT",), days=3, speed=0.0))
    await srv.start()
    ep = resolve_endpoints("custom", f"http://127.0.0.1:{srv.port}", f"ws://127.0.0.1:{srv.port}")
    # Both weight counters restart at each minute of their clock: both are pinned inside one.
    srv.limiter.clock_ms = lambda: 1_000
    budget = WeightBudget(now_ms=lambda: 29_600_000 * 60_000 + 1_000)
    ex = BinanceExchange(ep, Credentials(srv.cfg.api_key, srv.cfg.api_secret), budget=budget)
    try:
        srv.limiter.admit(300, False)  # weight spent by another client of the same IP
        await ex.balance()
        await ex.income_history("XRPUSDT", 0)
        assert budget.used >= srv.limiter.state()["used_weight_1m"] >= 300
    finally:
        await ex.close()
        await srv.stop()
