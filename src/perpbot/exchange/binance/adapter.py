"""``BinanceExchange``: the ``ExchangePort`` (and its recovery reads) on Binance USDT-M REST.

Every request goes through ``BinanceRest`` (ccxt signing, the process-wide weight budget, time
sync, ``ExchangeError`` with Binance's code). Orders are idempotent by client id: when the outcome
of a placement is unknown (timeout, connection failure, 503 "Unknown error", -1007), the adapter
asks Binance for that client id, adopts the order if it exists and otherwise resends it under the
same id, so a retry never opens a second position. Conditional orders go only to the algo service
(``/fapi/v1/algoOrder``). Account events come from ``UserStream`` (see ``user_stream.py``) once
``start_user_stream`` ran: handlers registered with ``subscribe`` are awaited one event at a time
in the order Binance sent them, on the stream's task; a handler may call any REST method but must
not wait for a later event (that event is behind it in the same queue).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from perpbot.domain.events import AccountUpdate, ExchangeEvent, OrderTradeUpdate
from perpbot.domain.types import (
    ConditionalOrder,
    Fill,
    Income,
    Order,
    OrderResult,
    OrderSide,
    OrderType,
    Position,
    SymbolFilters,
)
from perpbot.exchange.binance.account_config import AccountConfig
from perpbot.exchange.binance.budget import WeightBudget, shared_budget, wall_ms
from perpbot.exchange.binance.ccxt_client import Credentials, signed_at
from perpbot.exchange.binance.checks import SetupError, check_keys_and_account, check_symbols
from perpbot.exchange.binance.client_ids import is_valid_client_id, make_client_id
from perpbot.exchange.binance.codec.account import income_from_json, position_from_json, trade_from_json
from perpbot.exchange.binance.codec.decimals import ASSET, fmt, num
from perpbot.exchange.binance.codec.market import filters_from_symbol_info
from perpbot.exchange.binance.codec.orders import algo_from_json, order_from_json
from perpbot.exchange.binance.environment import Endpoints
from perpbot.exchange.binance.market_data import PublicReads
from perpbot.exchange.binance.market_stream import Candle, KlineFeed
from perpbot.exchange.binance.placement import IdempotentPlacer, paged, trades_since
from perpbot.exchange.binance.rest import BinanceRest
from perpbot.exchange.binance.user_stream import KEEPALIVE_S, UserStream
from perpbot.exchange.binance.wallet import WalletBalance
from perpbot.exchange.binance.ws import StreamSettings
from perpbot.exchange.errors import (
    NO_NEED_TO_CHANGE_MARGIN_TYPE,
    ExchangeError,
)
from perpbot.exchange.port import EventHandler

log = logging.getLogger(__name__)

PAGE = 1000  # Binance's page size for income and userTrades
BAR_MS = 15 * 60_000


class WorkingType:
    CONTRACT_PRICE = "CONTRACT_PRICE"
    MARK_PRICE = "MARK_PRICE"


class BinanceExchange(PublicReads):
    """Async port over Binance USDT-M (live, demo or a custom URL such as ``perpbot simulate``)."""

    def __init__(
        self,
        endpoints: Endpoints,
        creds: Credentials,
        *,
        budget: WeightBudget | None = None,
        working_type: str = WorkingType.CONTRACT_PRICE,
        price_protect: bool = True,
        timeout_ms: int = 10_000,
        recv_window_ms: int = 5_000,
        now_ms: Callable[[], int] = wall_ms,
        retry_delay_s: float = 0.2,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if working_type not in (WorkingType.CONTRACT_PRICE, WorkingType.MARK_PRICE):
            raise ValueError(f"working_type {working_type!r}: CONTRACT_PRICE or MARK_PRICE")
        self.endpoints = endpoints
        self.rest = BinanceRest(
            endpoints,
            creds,
            budget or shared_budget(),
            timeout_ms=timeout_ms,
            recv_window_ms=recv_window_ms,
            now_ms=now_ms,
        )
        self.working_type = working_type
        self.price_protect = price_protect
        self.now_ms = now_ms
        # A request still in flight may execute until its recvWindow has passed: only then does
        # "not found" mean "never executed" (and a resend cannot double the order).
        self._placer = IdempotentPlacer(
            self.rest.call,
            retry_delay_s=retry_delay_s,
            sleep=sleep,
            in_flight_s=recv_window_ms / 1000 + 0.5,
            signed_at=signed_at,
        )
        self._handlers: list[EventHandler] = []
        self._leverage: dict[str, int] = {}
        self.config = AccountConfig()  # leverage / margin type as the venue last reported them
        self.user_stream: UserStream | None = None
        self.wallet = WalletBalance(self._read_balance, lambda: self.rest.executing_writes, self._stream_mark)

    def __repr__(self) -> str:
        return f"BinanceExchange({self.endpoints.env}, {self.endpoints.fapi})"

    # ------------------------------------------------------------------ lifecycle

    async def connect(self, symbols: list[str]) -> float:
        """Time sync, key and account checks, symbol checks; returns the USDT wallet balance.
        Raises ``SetupError`` (one line, exit 2) for what the user must fix."""
        await self.rest.sync_time()
        balance = await check_keys_and_account(self.rest.call, self.endpoints.env)
        check_symbols(await self.rest.exchange_info(), symbols)
        return balance

    async def start_user_stream(
        self, symbols: list[str], settings: StreamSettings | None = None, *, keepalive_s: float = KEEPALIVE_S
    ) -> UserStream:
        """Open the user-data stream (events go to ``subscribe``d handlers); returns once the
        first connection is up and its baseline is taken. Not up within the settings'
        ``first_connect_s`` (a venue that accepts the socket but never answers the upgrade, a
        refused listen key): the stream is stopped and ``SetupError`` names the last failure
        (one line, exit 2; the runtime closes what it opened), as no order may go out unheard."""
        if self.user_stream is None:
            self.user_stream = UserStream(self, symbols, settings=settings, keepalive_s=keepalive_s)
            self.user_stream.start()
        us = self.user_stream
        bound = us.socket.s.first_connect_s
        try:
            await asyncio.wait_for(us.socket.connected.wait(), bound)
        except TimeoutError:
            self.user_stream = None
            await us.stop()  # its tasks cancelled and awaited (``perpbot.aio.cancel_and_wait``)
            why = us.socket.last_error or "no attempt finished"
            raise SetupError(
                f"the user-data stream at {self.endpoints.ws} did not connect within {bound:g} s "
                f"({us.socket.failures} failed attempts; last: {why})"
            ) from None
        return us

    def kline_feed(
        self,
        symbols: list[str],
        on_candle: Callable[[Candle], Awaitable[None]],
        settings: StreamSettings | None = None,
        *,
        preload: int = 300,
        candle_grace_s: float | None = None,
    ) -> KlineFeed:
        """The market stream of ``symbols`` on this venue, backfilled through this adapter's REST."""

        async def fetch(symbol: str, start_ms: int | None, limit: int) -> list[list[Any]]:
            return await self.klines(symbol, "15m", start_ms=start_ms, limit=limit)

        return KlineFeed(
            self.endpoints,
            symbols,
            fetch,
            on_candle,
            server_ms=self.server_ms,
            settings=settings,
            preload=preload,
            candle_grace_s=candle_grace_s,
        )

    def server_ms(self) -> int:
        """Binance's clock as measured at the last time sync."""
        return self.now_ms() - self.rest.time_offset_ms

    async def close(self) -> None:
        if self.user_stream is not None:
            await self.user_stream.stop()
            self.user_stream = None
        await self.rest.close()

    # ------------------------------------------------------------------ events

    def subscribe(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    async def dispatch(self, event: ExchangeEvent) -> None:
        """Hand one event to every handler in order (called by the user stream, one at a time)."""
        if isinstance(event, AccountUpdate | OrderTradeUpdate):
            self.wallet.invalidate()  # before any handler can read the balance
            if isinstance(event, AccountUpdate):
                usdt = [b.wallet_balance for b in event.balances if b.asset == ASSET]
                if usdt:
                    self.wallet.observe(event.event_time_ms, usdt[0])
        for handler in tuple(self._handlers):
            try:
                await handler(event)
            except Exception:
                log.exception("event handler %r failed on %s", handler, type(event).__name__)

    # ------------------------------------------------------------------ market rules and account

    async def symbol_filters(self, symbol: str) -> SymbolFilters:
        """PRICE_FILTER, LOT_SIZE tightened by MARKET_LOT_SIZE (the bot only sends MARKET orders),
        MIN_NOTIONAL; from ``exchangeInfo`` (24 h cache, stale copy on failure)."""
        info = await self.rest.exchange_info()
        for entry in info.get("symbols", []):
            if entry.get("symbol") == symbol:
                f = filters_from_symbol_info(entry)
                mlot = next(
                    (x for x in entry.get("filters", []) if x["filterType"] == "MARKET_LOT_SIZE"), None
                )
                if mlot is None:
                    return f
                return SymbolFilters(
                    symbol=f.symbol,
                    tick_size=f.tick_size,
                    step_size=max(f.step_size, num(mlot.get("stepSize"))),
                    min_qty=max(f.min_qty, num(mlot.get("minQty"))),
                    min_notional=f.min_notional,
                    max_qty=min(f.max_qty, num(mlot.get("maxQty")) or f.max_qty),
                )
        raise ExchangeError(-1121, f"Invalid symbol {symbol}.")

    async def balance(self) -> float:
        """The USDT wallet balance: reused while provably unchanged (``wallet.py``), else REST."""
        return await self.wallet.get()

    def prefetch_balance(self) -> None:
        """Start reading the balance now, so that an entry moments later need not wait for it."""
        self.wallet.prefetch()

    def _stream_mark(self) -> int | None:
        us = self.user_stream
        if us is None or not us.socket.connected.is_set():
            return None
        return us.socket.connects

    async def _read_balance(self) -> float:
        rows = await self.rest.call("fapiPrivateV3GetBalance")
        usdt = [r for r in rows if r.get("asset") == ASSET]
        return num(usdt[0].get("balance")) if usdt else 0.0

    async def position(self, symbol: str) -> Position | None:
        rows = await self.rest.call("fapiPrivateV2GetPositionRisk", {"symbol": symbol})
        for row in rows:
            if row.get("symbol") == symbol and row.get("positionSide", "BOTH") == "BOTH":
                self.config.saw(symbol, row.get("leverage"), row.get("marginType"))
                p = position_from_json(row, self._leverage.get(symbol))
                if p is not None:
                    return p
        return None

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        """Ensure the venue uses ``leverage`` for ``symbol``: skipped when the ``positionRisk``
        row read moments ago already says so (``account_config``), sent otherwise."""
        if self.config.leverage_is(symbol, leverage):
            self.config.skipped += 1
            self._leverage[symbol] = int(leverage)
            return
        await self.rest.call("fapiPrivatePostLeverage", {"symbol": symbol, "leverage": int(leverage)})
        self._leverage[symbol] = int(leverage)
        self.config.saw(symbol, leverage=int(leverage))

    async def set_isolated_margin(self, symbol: str) -> None:
        """Ensure ISOLATED margin (-4046 "no need to change" is success); skipped like
        ``set_leverage`` when the venue already reported it."""
        if self.config.isolated(symbol):
            self.config.skipped += 1
            return
        try:
            await self.rest.call("fapiPrivatePostMarginType", {"symbol": symbol, "marginType": "ISOLATED"})
        except ExchangeError as exc:
            if exc.code != NO_NEED_TO_CHANGE_MARGIN_TYPE:
                raise
        self.config.saw(symbol, margin_type="isolated")

    # ------------------------------------------------------------------ orders

    def default_client_id(self, symbol: str, intent: str) -> str:
        """Deterministic id from the current candle's open time (used when the caller gives none)."""
        now = self.now_ms()
        return make_client_id(symbol, now - now % BAR_MS, intent)

    async def market_order(
        self,
        symbol: str,
        side: OrderSide,
        quantity: float,
        *,
        reduce_only: bool = False,
        client_order_id: str = "",
    ) -> OrderResult:
        cid = client_order_id or self.default_client_id(symbol, "exit" if reduce_only else "entry")
        _check_cid(cid)
        params: dict[str, Any] = {
            "symbol": symbol,
            "side": side.value,
            "type": "MARKET",
            "quantity": fmt(quantity),
            "newClientOrderId": cid,
            "newOrderRespType": "RESULT",
        }
        if reduce_only:
            params["reduceOnly"] = "true"

        async def lookup() -> Any:
            return await self.rest.call("fapiPrivateGetOrder", {"symbol": symbol, "origClientOrderId": cid})

        d = await self._placer.place("fapiPrivatePostOrder", params, lookup, cid)
        o = order_from_json(d)
        return OrderResult(o.order_id, o.status, o.executed_qty, o.avg_price)

    async def place_conditional(
        self,
        symbol: str,
        order_type: OrderType,
        side: OrderSide,
        quantity: float,
        trigger_price: float,
        *,
        reduce_only: bool = True,
        client_algo_id: str = "",
    ) -> ConditionalOrder:
        if not order_type.is_conditional:
            raise ExchangeError(-1116, f"Invalid orderType {order_type.value} for the algo service.")
        cid = client_algo_id or self.default_client_id(
            symbol, "sl" if order_type is OrderType.STOP_MARKET else "tp"
        )
        _check_cid(cid)
        params: dict[str, Any] = {
            "algoType": "CONDITIONAL",
            "symbol": symbol,
            "side": side.value,
            "type": order_type.value,
            "quantity": fmt(quantity),
            "triggerPrice": fmt(trigger_price),
            "workingType": self.working_type,
            "priceProtect": "true" if self.price_protect else "false",
            "clientAlgoId": cid,
            "newOrderRespType": "RESULT",
        }
        if reduce_only:
            params["reduceOnly"] = "true"

        async def lookup() -> Any:
            return await self.rest.call("fapiPrivateGetAlgoOrder", {"symbol": symbol, "clientAlgoId": cid})

        d = await self._placer.place("fapiPrivatePostAlgoOrder", params, lookup, cid)
        return algo_from_json(d)

    async def open_orders(self, symbol: str) -> list[Order]:
        rows = await self.rest.call("fapiPrivateGetOpenOrders", {"symbol": symbol})
        return [order_from_json(r) for r in rows]

    async def open_conditional_orders(self, symbol: str) -> list[ConditionalOrder]:
        rows = await self.rest.call("fapiPrivateGetOpenAlgoOrders", {"symbol": symbol})
        return [algo_from_json(r) for r in rows]

    async def cancel_order(self, symbol: str, order_id: int) -> None:
        await self.rest.call("fapiPrivateDeleteOrder", {"symbol": symbol, "orderId": int(order_id)})

    async def cancel_conditional(self, symbol: str, algo_id: int) -> None:
        await self.rest.call("fapiPrivateDeleteAlgoOrder", {"symbol": symbol, "algoId": int(algo_id)})

    async def cancel_all_orders(self, symbol: str) -> None:
        await self.rest.call("fapiPrivateDeleteAllOpenOrders", {"symbol": symbol})

    async def cancel_all_conditional(self, symbol: str) -> None:
        await self.rest.call("fapiPrivateDeleteAlgoOpenOrders", {"symbol": symbol})

    # ------------------------------------------------------------------ history and recovery reads

    async def income_history(
        self, symbol: str, start_ms: int, income_types: tuple[str, ...] = ()
    ) -> list[Income]:
        """All rows since ``start_ms``, paged by start time (1000 a page)."""
        base: dict[str, Any] = {"symbol": symbol, "limit": PAGE}
        if len(income_types) == 1:
            base["incomeType"] = income_types[0]
        rows = await paged(
            self.rest.call, "fapiPrivateGetIncome", base, start_ms, lambda r: (r["tranId"], r["incomeType"])
        )
        out = [income_from_json(r) for r in rows]
        return [r for r in out if not income_types or r.income_type in income_types]

    async def user_trades(self, symbol: str, start_ms: int = 0) -> list[Fill]:
        return [trade_from_json(r) for r in await trades_since(self.rest.call, symbol, start_ms)]

    async def get_order(self, symbol: str, *, order_id: int = 0, client_order_id: str = "") -> Order:
        params: dict[str, Any] = {"symbol": symbol}
        if order_id:
            params["orderId"] = int(order_id)
        else:
            params["origClientOrderId"] = client_order_id
        return order_from_json(await self.rest.call("fapiPrivateGetOrder", params))

    async def get_conditional(
        self, symbol: str, *, algo_id: int = 0, client_algo_id: str = ""
    ) -> ConditionalOrder:
        params: dict[str, Any] = {"symbol": symbol}
        if algo_id:
            params["algoId"] = int(algo_id)
        else:
            params["clientAlgoId"] = client_algo_id
        d = await self.rest.call("fapiPrivateGetAlgoOrder", params)
        algo = algo_from_json(d)
        actual = str(d.get("actualOrderId") or "")
        if actual.isdigit():
            algo = replace(algo, triggered_order_id=int(actual))
        return algo


def _check_cid(cid: str) -> None:
    if not is_valid_client_id(cid):
        raise ExchangeError(-1100, f"client id {cid!r}: 1..36 characters of [.A-Z:/a-z0-9_-]")
