"""Contract: filters, balance, position, leverage and isolated margin, the same on every adapter."""

from __future__ import annotations

import pytest

from perpbot.domain.types import OrderSide, Side
from perpbot.exchange.errors import INVALID_LEVERAGE, INVALID_SYMBOL, ExchangeError
from perpbot.exchange.port import ExchangePort
from tests.contract.harness import BinanceVenue, SimVenue

Venue = SimVenue | BinanceVenue


async def test_adapter_implements_the_recovery_port(venue: Venue) -> None:
    assert isinstance(venue.ex, ExchangePort)


async def test_filters_come_from_the_exchange_rules(venue: Venue) -> None:
    xrp = await venue.ex.symbol_filters("XRPUSDT")
    trx = await venue.ex.symbol_filters("TRXUSDT")
    assert (xrp.tick_size, xrp.step_size, xrp.min_qty, xrp.min_notional) == (0.0001, 0.1, 0.1, 5.0)
    assert (trx.tick_size, trx.step_size, trx.min_qty, trx.min_notional) == (0.00001, 1.0, 1.0, 5.0)


async def test_unknown_symbol_is_refused_with_binance_code(venue: Venue) -> None:
    with pytest.raises(ExchangeError) as err:
        await venue.ex.market_order("NOPEUSDT", OrderSide.BUY, 10.0, client_order_id="x-1")
    assert err.value.code == INVALID_SYMBOL


async def test_fresh_account_has_its_balance_and_no_position(venue: Venue) -> None:
    assert await venue.ex.balance() == pytest.approx(1000.0)
    assert await venue.ex.position("XRPUSDT") is None


async def test_leverage_and_isolated_margin_apply_to_the_next_position(venue: Venue) -> None:
    ex = venue.ex
    await ex.set_isolated_margin("XRPUSDT")
    await ex.set_isolated_margin("XRPUSDT")  # -4046 "no need to change" is success
    await ex.set_leverage("XRPUSDT", 5)
    await ex.market_order("XRPUSDT", OrderSide.SELL, 100.0, client_order_id="lev-1")
    pos = await ex.position("XRPUSDT")
    assert pos is not None
    assert (pos.side, pos.quantity, pos.leverage) == (Side.SHORT, 100.0, 5)
    # isolated margin = notional / leverage at entry
    assert pos.isolated_margin == pytest.approx(pos.quantity * pos.entry_price / 5, rel=1e-6)


async def test_invalid_leverage_is_refused(venue: Venue) -> None:
    with pytest.raises(ExchangeError) as err:
        await venue.ex.set_leverage("XRPUSDT", 0)
    assert err.value.code == INVALID_LEVERAGE
