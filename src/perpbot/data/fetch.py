"""History download from Binance USDT-M futures public endpoints through ccxt's async ``binanceusdm``.

SPEC §7.1 with the §13 corrections (retries with back-off, de-duplication) and three deliberate
choices:

* **Raw endpoints, not ccxt's unified methods.** ``fapiPublicGetKlines`` & co. return Binance's
  documented shapes (kline arrays with their close time, ``fundingTime``, ``sumOpenInterest``)
  without ``load_markets`` and its extra calls, so the exact requests are known and a loopback
  server can answer them in tests.
* **Only closed candles are kept** (close time ≤ server time) and the file records
  ``closed_through_ms``, so the loader never mistakes the forming candle for a real one.
* **Every wait goes through an injected ``sleep``**: page pacing (0.3 s), the pause between the
  two micro downloads (1 s) and between symbols (5 s), and retry back-off. Tests pass a recorder
  and run instantly while still asserting what would have been waited.

The base URL is configurable (``BINANCE_FAPI_URL`` / ``--base-url``): every ``fapi*`` entry of
ccxt's ``urls['api']`` is re-pointed at it, keeping each entry's path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.progress import Progress, TaskID

from perpbot.config import CorrelationMap
from perpbot.data.candle_shape import combine, funding_on_candles, ms_index, oi_change_on_candles
from perpbot.data.history_client import (
    DAY_MS,
    DEFAULT_FAPI_URL,
    FetchError,
    HistoryClient,
    Pacing,
    RetryPolicy,
    Sleep,
    make_exchange,
    resolve_base_url,
)
from perpbot.data.schema import BAR_MS, data_path
from perpbot.data.store import load_market, save_market, upsert_market, validate_market
from perpbot.errors import ConfigError

# Resolved at call time, so a test can make a whole CLI run pause-free by replacing it.
DEFAULT_PACING = Pacing()


@dataclass(frozen=True, slots=True)
class FetchSummary:
    """What one symbol's download did, for the CLI to print."""

    symbol: str
    path: Path
    downloaded: int  # closed candles in the fresh download (after the inner join)
    rows: int  # rows in the file now
    first: pd.Timestamp
    last: pd.Timestamp
    funding_events: int
    oi_rows: int  # candles that received a non-zero open-interest change


# --------------------------------------------------------------------------------------------
# One symbol, many symbols


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """Everything a download needs besides the symbol (the CLI and the script build one)."""

    days: int = 365
    correlation: CorrelationMap = field(default_factory=CorrelationMap)
    with_oi: bool = True
    upsert: bool = True


class _Progress:
    """A thin adapter so the download code never checks for ``None``."""

    def __init__(self, progress: Progress | None, symbol: str, total: int) -> None:
        self._p = progress
        self._symbol = symbol
        self._total = total
        self._task: TaskID | None = progress.add_task(f"fetch {symbol}", total=total) if progress else None

    def advance(self, n: int) -> None:
        if self._p is not None and self._task is not None:
            self._p.advance(self._task, n)

    def stage(self, name: str) -> None:
        if self._p is not None and self._task is not None:
            self._p.update(self._task, description=f"fetch {self._symbol}: {name}")

    def done(self) -> None:
        if self._p is not None and self._task is not None:
            self._p.update(self._task, completed=self._total, description=f"fetch {self._symbol}")


def _existing(path: Path, upsert: bool) -> pd.DataFrame | None:
    """The stored frame to upsert into; a corrupt file is an error (``--no-upsert`` overwrites)."""
    if not upsert or not path.exists():
        return None
    return load_market(path)


async def fetch_symbol(
    client: HistoryClient,
    symbol: str,
    path: Path,
    now_ms: int,
    options: FetchOptions,
    progress: Progress | None = None,
) -> FetchSummary:
    """Download one primary symbol with its correlation candles, funding and OI; upsert; save.

    With an existing file the download starts no later than the candle after its last one, so
    the upserted file never has a hole between old and new rows.
    """
    stored = _existing(path, options.upsert)
    start_ms = (now_ms - options.days * DAY_MS) // BAR_MS * BAR_MS
    if stored is not None:
        start_ms = min(start_ms, int(stored.index.asi8[-1]) + BAR_MS)
    bar = _Progress(progress, symbol, total=3 * max((now_ms - start_ms) // BAR_MS, 1))

    legs: list[pd.DataFrame] = []
    for sym in (symbol, options.correlation.btc, options.correlation.eth):
        bar.stage(f"klines {sym}")
        frame = await client.klines(sym, start_ms, now_ms, on_rows=bar.advance)
        if frame.empty:
            raise FetchError(
                f"klines {sym}: no closed candles since {ms_index([start_ms])[0]:%Y-%m-%d %H:%M} UTC"
            )
        legs.append(frame)
    market = combine(*legs)
    if market.empty:
        raise FetchError(
            f"{symbol}: no candle times shared with {options.correlation.btc}/{options.correlation.eth}"
        )

    bar.stage("funding")
    events = await client.funding(symbol, int(market.index.asi8[0]), now_ms)
    market["funding_rate"] = funding_on_candles(market.index, events)
    market["oi_change"] = 0.0
    if options.with_oi:
        await client.sleep(client.pacing.stage_s)
        bar.stage("open interest")
        oi = await client.open_interest(symbol, int(market.index.asi8[0]), now_ms)
        market["oi_change"] = oi_change_on_candles(market.index, oi)
    fresh = validate_market(market, f"download of {symbol} from {client.base_url}")

    merged = upsert_market(stored, fresh) if stored is not None else fresh
    save_market(merged, path, closed_through_ms=int(merged.index.asi8[-1]))
    bar.done()
    return FetchSummary(
        symbol=symbol,
        path=path,
        downloaded=len(fresh),
        rows=len(merged),
        first=merged.index[0],
        last=merged.index[-1],
        funding_events=len(events),
        oi_rows=int((fresh["oi_change"] != 0.0).sum()),
    )


async def fetch_history_async(
    symbols: Sequence[str],
    *,
    data_dir: Path = Path("data"),
    output: Path | None = None,
    options: FetchOptions | None = None,
    base_url: str = DEFAULT_FAPI_URL,
    progress: Progress | None = None,
    sleep: Sleep | None = None,
    retry: RetryPolicy | None = None,
    pacing: Pacing | None = None,
) -> list[FetchSummary]:
    """Fetch each symbol into ``data/<sym>/combined_15m.parquet`` (or ``output`` for one symbol).

    One client and one server-time reading for the whole run; the correlation candles are
    downloaded once and reused across symbols.
    """
    opts = options or FetchOptions()
    if opts.days < 1:
        raise ConfigError(f"--days={opts.days}: must be >= 1")
    if output is not None and len(symbols) != 1:
        raise ConfigError("--output needs exactly one symbol")
    clash = set(symbols) & set(opts.correlation.as_tuple())
    if clash:
        raise ConfigError(f"{sorted(clash)[0]}: is a correlation symbol, not a tradable primary here")
    url = resolve_base_url(base_url)
    nap = sleep or asyncio.sleep
    client = HistoryClient(make_exchange(url), url, nap, retry or RetryPolicy(), pacing or DEFAULT_PACING)
    try:
        now_ms = await client.server_time()
        await client.require_symbols([*symbols, *opts.correlation.as_tuple()])
        results: list[FetchSummary] = []
        for i, sym in enumerate(symbols):
            if i:
                await nap(client.pacing.symbol_s)
            path = output if output is not None else data_path(data_dir, sym)
            results.append(await fetch_symbol(client, sym, path, now_ms, opts, progress))
        return results
    finally:
        await client.exchange.close()


def fetch_history(symbols: Sequence[str], **kwargs: Any) -> list[FetchSummary]:
    """Synchronous entry point for the CLI and ``scripts/fetch_history.py``."""
    return asyncio.run(fetch_history_async(symbols, **kwargs))
