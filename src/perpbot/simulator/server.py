"""The simulator server: one aiohttp application, one port, Binance's REST and streams.

``SimServer`` wires the parts (venue, replay, auth, limits, faults, hubs) and owns the request
pipeline every Binance route goes through, in Binance's order: weight accounting, injected
faults, authentication, the handler, then the post-execution faults (a lost reply). Every answer
carries ``X-MBX-USED-WEIGHT-1M`` (and order counts on order routes); every failure is Binance's
JSON error; nothing a client sends can make the server answer a traceback or stop serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from perpbot.aio import STOP_WAIT_S, cancel_and_wait
from perpbot.domain.types import Income
from perpbot.exchange.sim.settings import SimSettings
from perpbot.simulator import control, rest_account, rest_orders, rest_public
from perpbot.simulator.audit import ProtectionAudit
from perpbot.simulator.auth import Authenticator, parse_params
from perpbot.simulator.config import SimulatorConfig
from perpbot.simulator.errors import BinanceError, json_response
from perpbot.simulator.faults import Fault, FaultBook, load_fault_file
from perpbot.simulator.late_income import LateIncome
from perpbot.simulator.listen_keys import ListenKeys
from perpbot.simulator.market import Market, load_market_data
from perpbot.simulator.params import Params
from perpbot.simulator.replay import Replay
from perpbot.simulator.venue import Venue
from perpbot.simulator.weights import ORDER_ROUTES, PacedReplayClock, RateLimiter, request_weight
from perpbot.simulator.ws_market import MarketHub
from perpbot.simulator.ws_private import PrivateHub

log = logging.getLogger(__name__)

Handler = Callable[[Any, Params], Any]
NONE, KEY, SIGNED = "NONE", "KEY", "SIGNED"

ROUTES: list[tuple[str, str, Handler, str]] = [
    ("GET", "/fapi/v1/ping", rest_public.ping, NONE),
    ("GET", "/fapi/v1/time", rest_public.server_time, NONE),
    ("GET", "/fapi/v1/exchangeInfo", rest_public.exchange_info, NONE),
    ("GET", "/fapi/v1/klines", rest_public.klines, NONE),
    ("GET", "/fapi/v1/markPriceKlines", rest_public.mark_price_klines, NONE),
    ("GET", "/fapi/v1/premiumIndex", rest_public.premium_index, NONE),
    ("GET", "/fapi/v1/fundingRate", rest_public.funding_rate, NONE),
    ("GET", "/fapi/v1/openInterest", rest_public.open_interest, NONE),
    ("GET", "/futures/data/openInterestHist", rest_public.open_interest_hist, NONE),
    ("GET", "/fapi/v3/account", rest_account.account, SIGNED),
    ("GET", "/fapi/v2/account", rest_account.account, SIGNED),
    ("GET", "/fapi/v3/balance", rest_account.balance, SIGNED),
    ("GET", "/fapi/v2/balance", rest_account.balance, SIGNED),
    ("GET", "/fapi/v3/positionRisk", rest_account.position_risk_v3, SIGNED),
    ("GET", "/fapi/v2/positionRisk", rest_account.position_risk_v2, SIGNED),
    ("GET", "/fapi/v1/leverageBracket", rest_account.leverage_bracket, SIGNED),
    ("GET", "/fapi/v1/positionSide/dual", rest_account.get_dual, SIGNED),
    ("GET", "/fapi/v1/multiAssetsMargin", rest_account.get_multi_assets, SIGNED),
    ("POST", "/fapi/v1/positionSide/dual", rest_account.post_dual, SIGNED),
    ("POST", "/fapi/v1/leverage", rest_account.set_leverage, SIGNED),
    ("POST", "/fapi/v1/marginType", rest_account.set_margin_type, SIGNED),
    ("GET", "/fapi/v1/income", rest_account.income, SIGNED),
    ("GET", "/fapi/v1/userTrades", rest_account.user_trades, SIGNED),
    ("POST", "/fapi/v1/listenKey", rest_account.listen_key_post, KEY),
    ("PUT", "/fapi/v1/listenKey", rest_account.listen_key_put, KEY),
    ("DELETE", "/fapi/v1/listenKey", rest_account.listen_key_delete, KEY),
    ("POST", "/fapi/v1/order", rest_orders.new_order, SIGNED),
    ("GET", "/fapi/v1/order", rest_orders.get_order, SIGNED),
    ("DELETE", "/fapi/v1/order", rest_orders.cancel_order, SIGNED),
    ("GET", "/fapi/v1/openOrders", rest_orders.open_orders, SIGNED),
    ("DELETE", "/fapi/v1/allOpenOrders", rest_orders.cancel_all_orders, SIGNED),
    ("POST", "/fapi/v1/algoOrder", rest_orders.new_algo_order, SIGNED),
    ("GET", "/fapi/v1/algoOrder", rest_orders.get_algo_order, SIGNED),
    ("DELETE", "/fapi/v1/algoOrder", rest_orders.cancel_algo_order, SIGNED),
    ("GET", "/fapi/v1/openAlgoOrders", rest_orders.open_algo_orders, SIGNED),
    ("DELETE", "/fapi/v1/algoOpenOrders", rest_orders.cancel_all_algo_orders, SIGNED),
]
UNKNOWN_AFTER_EXECUTION = {"msg": "Unknown error, please check your request or try again later."}


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class SimServer:
    """Everything one ``perpbot simulate`` process serves."""

    def __init__(
        self,
        cfg: SimulatorConfig,
        *,
        market: Market | None = None,
        wall_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.cfg = cfg
        self.wall_ms = wall_ms
        self.market = market or load_market_data(list(cfg.symbols), cfg.data_dir, cfg.from_ms, cfg.days)
        settings = SimSettings(
            initial_balance=cfg.balance,
            taker_fee=cfg.taker_fee,
            maker_fee=cfg.maker_fee,
            slippage_bps=cfg.slippage_bps,
            max_fill_qty_per_execution=cfg.max_fill_qty_per_execution,
        )
        self.venue = Venue.create(self.market, settings)
        self.faults = FaultBook(wall_ms)
        self.late_income = LateIncome()
        self.auth = Authenticator(cfg.api_key, cfg.api_secret, self.server_ms)
        limits_ms = PacedReplayClock(lambda: self.venue.now_ms) if cfg.replay_limits else wall_ms
        self.limiter = RateLimiter(limits_ms, cfg.weight_limit)
        self.listen_keys = ListenKeys(cfg.api_key, wall_ms, int(cfg.listen_key_validity_s * 1000))
        self.market_hub = MarketHub(cfg, self.faults)
        self.private_hub = PrivateHub(cfg, self.listen_keys, self.faults, lambda: self.venue.now_ms)
        self.venue.listeners.append(self.private_hub.on_event)
        self.audit = ProtectionAudit(self.venue)
        self.venue.listeners.append(lambda _ev: self.audit.observe())
        self.replay = Replay(self.venue, cfg.speed, [self.market_hub.on_candle], [self.market_hub.on_path])
        self._runner: web.AppRunner | None = None
        self._watch: asyncio.Task[None] | None = None
        self.port = 0
        if cfg.faults_file is not None:
            self.inject(load_fault_file(cfg.faults_file, wall_ms()))

    def server_ms(self) -> int:
        """Binance server time: the wall clock (plus an injected skew), never replay time."""
        return self.wall_ms() + self.faults.skew_ms()

    def incomes(
        self, symbol: str | None, start: int | None, end: int | None, types: tuple[str, ...]
    ) -> list[Income]:
        """The income history as ``GET /fapi/v1/income`` shows it: without the rows a
        ``late_income`` fault still holds back."""
        self._claim_income()
        rows = self.venue.incomes(symbol, start, end, types)
        return self.late_income.visible(rows, self.venue.now_ms, self.wall_ms())

    def _claim_income(self) -> None:
        self.late_income.claim(self.venue.engine.incomes_since(self.late_income.seen), self.faults)

    def inject(self, faults: list[Fault]) -> None:
        self._claim_income()  # rows booked before these faults are not theirs
        for f in self.faults.add(faults):
            if f.kind == "drop_connection":
                hub = self.market_hub if f.params["stream"] == "market" else self.private_hub
                f.hits = hub.drop_all()
            elif f.kind == "expire_listen_key":
                f.hits = int(self.listen_keys.key is not None)
                self.private_hub.told_expired = 0
                self.listen_keys.expire()
                # Sockets on the key that got ``listenKeyExpired``: with none (a reconnect under
                # way) there was nothing to see; the client's next connect takes a new key.
                f.params["told"] = self.private_hub.told_expired
            elif f.kind == "adl":
                f.hits = self._deleverage(f.symbol, float(f.params.get("fraction", 0.5)))

    def _deleverage(self, symbol: str | None, fraction: float) -> int:
        """ADL ``fraction`` of one position (at least one step); 1 if a position was hit."""
        v = self.venue
        held = [s for s in v.market.symbols if v.engine.position(s) is not None]
        target = symbol if symbol in held else (held[0] if held and symbol is None else None)
        if target is None:
            return 0
        pos = v.engine.position(target)
        assert pos is not None
        step = v.engine.symbol_filters(target).step_size
        v.call(v.engine.deleverage, target, max(step, pos.quantity * fraction))
        return 1

    # ------------------------------------------------------------------ app

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[_errors_middleware], client_max_size=self.cfg.max_body_bytes)
        app[control.SRV_KEY] = self
        for method, path, handler, security in ROUTES:
            app.router.add_route(method, path, self._endpoint(method, path, handler, security))
        m, p = self.market_hub, self.private_hub
        for prefix in ("/market", "/public", ""):
            app.router.add_get(f"{prefix}/ws", m.handler(False))
            app.router.add_get(prefix + "/ws/{n:[0-9]+}", m.handler(False))
            app.router.add_get(f"{prefix}/stream", m.handler(True))
        app.router.add_get("/private/ws", p.handler(False))
        app.router.add_get("/private/ws/{key:[A-Za-z0-9]+}", p.handler(False))
        app.router.add_get("/private/stream", p.handler(True))
        app.router.add_get("/sim/state", control.get_state)
        app.router.add_post("/sim/advance", control.post_advance)
        app.router.add_post("/sim/faults", control.post_faults)
        app.router.add_get("/sim/audit", control.get_audit)
        return app

    def _endpoint(self, method: str, path: str, handler: Handler, security: str) -> Any:
        is_order = (method, path) in ORDER_ROUTES

        async def endpoint(request: web.Request) -> web.StreamResponse:
            raw_q = request.rel_url.raw_query_string
            raw_b = (await request.read()).decode("utf-8", "replace") if request.can_read_body else ""
            params = parse_params(raw_q, raw_b)
            symbol = params.get("symbol")
            try:
                self.limiter.admit(request_weight(method, path, params), is_order)
                if self.faults.active:
                    await self._before(method, path, symbol)
                if security == SIGNED:
                    params = self.auth.check_signed(request.headers.get("X-MBX-APIKEY"), raw_q, raw_b)
                elif security == KEY:
                    self.auth.check_key(request.headers.get("X-MBX-APIKEY"))
                body = handler(self, Params(params))
                lost = (
                    is_order
                    and self.faults.active
                    and self.faults.take("unknown_after_execution", path, symbol) is not None
                )
                resp = json_response(UNKNOWN_AFTER_EXECUTION, status=503) if lost else json_response(body)
            except BinanceError as exc:
                resp = exc.response()
            resp.headers.update(self.limiter.headers(is_order))
            return resp

        return endpoint

    async def _before(self, method: str, path: str, symbol: str | None) -> None:
        f = self.faults.take("latency", path, symbol)
        if f is not None:
            await asyncio.sleep(float(f.params["ms"]) / 1000.0)
        if self.faults.take("rate_limit_burst", path, symbol) is not None:
            raise self.limiter.too_many(self.wall_ms(), self.wall_ms() + 1000)
        f = self.faults.take("http_error", path, symbol, method=method)
        if f is not None:
            status = int(f.params.get("status", 500))
            raise BinanceError(-1000, "An unknown error occured while processing the request.", status=status)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Bind, start the replay and the key-expiry watcher; returns the bound port."""
        self._runner = web.AppRunner(self.build_app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.replay.start()
        self._watch = asyncio.get_running_loop().create_task(self._watch_keys(), name="sim-listen-keys")
        return self.port

    async def _watch_keys(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.listen_keys.active()

    async def stop(self) -> None:
        await self.replay.stop()
        if self._watch is not None:
            await cancel_and_wait(self._watch, STOP_WAIT_S)
        hubs = (self.market_hub, self.private_hub)
        for hub in hubs:
            for c in tuple(hub.conns):
                c.close_soon(1001, b"Server shutting down")  # "going away", then the queue drains
        for _ in range(100):  # up to 1 s for clients to receive their close frames
            if not any(hub.conns for hub in hubs):
                break
            await asyncio.sleep(0.01)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@web.middleware
async def _errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown routes, wrong methods, oversized bodies and bugs: Binance-style JSON, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404:
            return json_response(
                {"code": -5000, "msg": f"Path {request.path}, Method {request.method} is invalid"}, 404
            )
        if exc.status == 405:
            return json_response(
                {"code": -1000, "msg": f"Method {request.method} is not allowed on {request.path}"}, 405
            )
        if exc.status == 413:
            return json_response({"code": -1000, "msg": "Request body is too large."}, 413)
        if exc.status >= 400 and exc.content_type == "application/json":
            raise
        if exc.status >= 400:
            return json_response({"code": -1000, "msg": exc.text or exc.reason}, exc.status)
        raise
    except BinanceError as exc:
        return exc.response()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("simulator: unexpected error on %s %s", request.method, request.path)
        return json_response(
            {"code": -1000, "msg": "An unknown error occured while processing the request."}, 500
        )
