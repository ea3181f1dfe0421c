"""What an entry no longer asks the venue for, and when it asks again (docs/ARCHITECTURE.md,
"Decision latency"): leverage and margin type are sent only when the venue's last word differs or
is unknown; the wallet balance is reused only while nothing could have changed it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from perpbot.domain.events import AccountUpdate, BalanceChange
from perpbot.domain.types import OrderSide
from perpbot.exchange.binance.account_config import AccountConfig
from perpbot.exchange.binance.wallet import WalletBalance
from tests.contract.harness import BinanceVenue

Start = Callable[..., Any]
SYM = "XRPUSDT"


async def _venue_config(v: BinanceVenue) -> tuple[int, str]:
    rows = await v.ex.rest.call("fapiPrivateV2GetPositionRisk", {"symbol": SYM})
    return int(rows[0]["leverage"]), str(rows[0]["marginType"])


async def test_leverage_and_margin_type_are_sent_only_when_the_venue_says_otherwise(
    start_venue: Start,
) -> None:
    v: BinanceVenue = await start_venue()
    ex = v.ex
    now = [0.0]
    ex.config = AccountConfig(ttl_s=30.0, clock=lambda: now[0])
    # Unknown (nothing read yet): both requests go out.
    w0 = ex.rest.writes
    await ex.set_leverage(SYM, 5)
    await ex.set_isolated_margin(SYM)
    assert ex.rest.writes == w0 + 2 and await _venue_config(v) == (5, "isolated")
    # The position read of the candle says 5 / ISOLATED: nothing is sent.
    assert await ex.position(SYM) is None
    await ex.set_leverage(SYM, 5)
    await ex.set_isolated_margin(SYM)
    assert ex.rest.writes == w0 + 2 and ex.config.skipped == 2
    # Someone changed the leverage on the venue (the web UI): the next read says so → re-set.
    await ex.rest.call("fapiPrivatePostLeverage", {"symbol": SYM, "leverage": 7})
    await ex.position(SYM)
    w1 = ex.rest.writes
    await ex.set_leverage(SYM, 5)
    assert ex.rest.writes == w1 + 1 and (await _venue_config(v))[0] == 5
    # Another leverage is wanted: sent although the venue's word is fresh.
    await ex.set_leverage(SYM, 3)
    assert ex.rest.writes == w1 + 2 and (await _venue_config(v))[0] == 3
    # Too old an answer is no answer.
    await ex.position(SYM)
    now[0] += 31.0
    await ex.set_leverage(SYM, 3)
    await ex.set_isolated_margin(SYM)  # -4046 from the venue: still done
    assert ex.rest.writes == w1 + 4
    # ACCOUNT_CONFIG_UPDATE (leverage/margin changed elsewhere) forgets what we knew.
    await ex.position(SYM)
    assert ex.config.leverage_is(SYM, 3) and ex.config.isolated(SYM)
    assert ex.user_stream is not None
    await ex.user_stream._on_frame({"e": "ACCOUNT_CONFIG_UPDATE", "ac": {"s": SYM, "l": 9}})
    assert not ex.config.leverage_is(SYM, 3) and not ex.config.isolated(SYM)


async def test_the_wallet_balance_is_reused_only_while_nothing_could_have_changed_it(
    start_venue: Start,
) -> None:
    v: BinanceVenue = await start_venue()
    ex = v.ex
    truth = ex._read_balance
    first = await ex.balance()
    assert await ex.balance() == first and ex.wallet.reads == 1 and ex.wallet.hits == 1
    # A setting changes no wallet: kept.
    await ex.set_leverage(SYM, 4)
    assert await ex.balance() == first and ex.wallet.reads == 1
    # A real entry: dropped as soon as the order leaves (it can execute at once) …
    res = await ex.market_order(SYM, OrderSide.BUY, 10.0, client_order_id="t-XRPUSDT-1-entry")
    assert res.executed_qty == 10.0 and ex.wallet.cached() is None
    # … and the fee's ACCOUNT_UPDATE brings the venue's new value: no read needed for it.
    await v.settle(lambda evs: any(isinstance(e, AccountUpdate) for e in evs))
    after = await ex.balance()
    assert after == await truth() and after < first and ex.wallet.reads == 1
    # An update without the USDT balance drops it; the next call reads.
    await ex.dispatch(AccountUpdate(event_time_ms=0, reason="FUNDING_FEE"))
    assert await ex.balance() == after and ex.wallet.reads == 2
    # A late or reordered update (older than the one kept) is never taken over it.
    await ex.dispatch(AccountUpdate(event_time_ms=1, reason="ORDER", balances=(_usdt(1.0),)))
    assert await ex.balance() == after and ex.wallet.reads == 3
    # Prefetched when a signal is known, then used by the entry without a second request.
    ex.wallet.invalidate()
    reads = ex.wallet.reads
    ex.prefetch_balance()
    assert await ex.balance() == await truth() and ex.wallet.reads == reads + 1
    # Without a connected user stream nothing is kept: every call asks the venue.
    assert ex.user_stream is not None
    ex.user_stream.socket.connected.clear()
    reads = ex.wallet.reads
    await ex.balance()
    await ex.balance()
    assert ex.wallet.reads == reads + 2


def _usdt(wallet: float) -> BalanceChange:
    return BalanceChange("USDT", wallet, wallet, 0.0)


async def test_a_read_overtaken_by_an_event_or_a_reconnect_is_not_kept() -> None:
    conn = [1]
    writes = [0]
    values = iter([100.0, 99.0, 98.0, 97.0])
    wallet: WalletBalance

    async def read() -> float:
        await asyncio.sleep(0)
        return next(values)

    wallet = WalletBalance(read, lambda: writes[0], lambda: conn[0])

    async def racing_event() -> float:
        task = asyncio.ensure_future(wallet.get())
        await asyncio.sleep(0)
        wallet.invalidate()  # an ACCOUNT_UPDATE handled while the read was in flight
        return await task

    assert await racing_event() == 100.0  # returned to its caller ...
    assert wallet.cached() is None  # ... but not kept
    assert await wallet.get() == 99.0 and wallet.cached() == 99.0
    conn[0] = 2  # the user stream reconnected: events may have been missed
    assert wallet.cached() is None and await wallet.get() == 98.0
    writes[0] += 1
    assert wallet.cached() is None
    now = [0.0]
    aged = WalletBalance(read, lambda: 0, lambda: 1, ttl_s=60.0, clock=lambda: now[0])
    assert await aged.get() == 97.0 and aged.cached() == 97.0
    now[0] = 61.0
    assert aged.cached() is None
