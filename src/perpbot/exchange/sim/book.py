"""One symbol's book in the simulated exchange: its candles, its position and its resting algo orders.

Separate from the engine because it is the state every other part reads (the intra-bar walk, the
position arithmetic, the clearing of executions) and because its layout is tuned for the hot
loop: ``__slots__``, memoryviews over read-only arrays (they index to plain Python scalars at a
fraction of numpy's per-item cost) and a pre-computed trigger band (``rearm``) that lets
``MatchingEngine.process_bar`` skip a bar after two comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from perpbot.data.schema import detect_funding_convention, settled_funding
from perpbot.domain.types import OrderSide, OrderType, SymbolFilters
from perpbot.exchange.sim.settings import FUNDING_INTERVAL_MS

INF = math.inf


@dataclass(slots=True)
class Algo:
    """A resting conditional order; ``up`` = fires when the price rises to the trigger."""

    algo_id: int
    client_algo_id: str
    side: OrderSide
    type: OrderType
    quantity: float
    trigger: float
    reduce_only: bool
    time_ms: int
    up: bool


class Book:
    """Per-symbol market data (memoryviews over read-only arrays) and account state."""

    __slots__ = (
        "algos",
        "armed",
        "close",
        "close_np",
        "dn_max",
        "entry",
        "filters",
        "funding",
        "funding_bars",
        "funding_convention",
        "funding_np",
        "high",
        "high_np",
        "i",
        "iw",
        "last_fill_ms",
        "leverage",
        "liq",
        "low",
        "low_np",
        "margin_type",
        "n",
        "open",
        "open_np",
        "open_time",
        "open_time_np",
        "qty",
        "symbol",
        "up_min",
    )

    def __init__(self, symbol: str, filters: SymbolFilters, leverage: int) -> None:
        self.symbol = symbol
        self.filters = filters
        self.n = 0
        self.i = -1  # last processed bar
        self.qty = 0.0  # signed position amount
        self.entry = 0.0
        self.iw = 0.0  # isolated wallet
        self.last_fill_ms = 0  # stamp of the latest execution (funding: what was open when)
        self.liq = 0.0  # liquidation price, 0 = none
        self.leverage = leverage
        self.margin_type = "CROSSED"  # Binance's default until the bot switches it
        self.algos: dict[int, Algo] = {}
        self.armed = False  # position open or algo orders resting
        self.up_min = INF  # nearest trigger above (fires on a rise)
        self.dn_max = -INF  # nearest trigger below (fires on a fall)
        self.funding_bars: frozenset[int] | None = None
        self.funding_convention: str | None = None


def _ro(a: npt.ArrayLike, dtype: type, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(a, dtype=dtype))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    view = arr.view()
    view.flags.writeable = False
    return view


def load_bars(
    b: Book,
    open_time_ms: npt.ArrayLike,
    open: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    funding_rate: npt.ArrayLike | None,
    funding_convention: str | None,
    bar_ms: int,
) -> None:
    """Validate a symbol's candles and attach them to ``b`` (see ``MatchingEngine.add_bars``)."""
    symbol = b.symbol
    b.open_time_np = _ro(open_time_ms, np.int64, "open_time_ms")
    b.open_np = _ro(open, np.float64, "open")
    b.high_np = _ro(high, np.float64, "high")
    b.low_np = _ro(low, np.float64, "low")
    b.close_np = _ro(close, np.float64, "close")
    n = len(b.open_time_np)
    if any(len(a) != n for a in (b.open_np, b.high_np, b.low_np, b.close_np)) or n == 0:
        raise ValueError(f"{symbol}: OHLC arrays must be non-empty and of equal length")
    if n > 1 and not bool(np.all(np.diff(b.open_time_np) > 0)):
        raise ValueError(f"{symbol}: open_time_ms must be strictly increasing")
    # memoryviews index to plain Python scalars at a fraction of numpy's per-item cost.
    b.open_time, b.open, b.high, b.low, b.close = (
        memoryview(a) for a in (b.open_time_np, b.open_np, b.high_np, b.low_np, b.close_np)
    )
    b.n = n
    if funding_rate is not None:
        raw = np.asarray(funding_rate, dtype=np.float64)
        if raw.ndim != 1 or len(raw) != n:
            raise ValueError(f"{symbol}: funding_rate length differs from the candles")
        conv = funding_convention or detect_funding_convention(b.open_time_np, raw, bar_ms)
        b.funding_convention = conv
        b.funding_np = _ro(settled_funding(b.open_time_np, raw, conv, bar_ms), np.float64, "funding_rate")
        b.funding = memoryview(b.funding_np)
        settle = (b.open_time_np % FUNDING_INTERVAL_MS == 0) & np.isfinite(b.funding_np)
        b.funding_bars = frozenset(np.flatnonzero(settle).tolist())
    else:
        b.funding_np = None
        b.funding = None
        b.funding_bars = None
        b.funding_convention = None


def next_price(b: Book, sgn: int, slip: float) -> float:
    """Next tradable price with adverse slippage ``slip`` for a taker of sign ``sgn`` (+1 buy)."""
    if b.i < 0:
        base = b.open[0]
    elif b.i + 1 < b.n:
        base = b.open[b.i + 1]
    else:
        base = b.close[b.i]
    return base * (1.0 + sgn * slip)


def rearm(b: Book) -> None:
    """Recompute the trigger band used by the fast path of ``process_bar``."""
    up, dn = INF, -INF
    for a in b.algos.values():
        if a.up:
            up = min(up, a.trigger)
        else:
            dn = max(dn, a.trigger)
    if b.qty > 0.0 and b.liq > 0.0:
        dn = max(dn, b.liq)
    elif b.qty < 0.0:
        up = min(up, b.liq)
    b.up_min, b.dn_max = up, dn
    b.armed = b.qty != 0.0 or bool(b.algos)
