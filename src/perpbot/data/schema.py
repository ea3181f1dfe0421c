"""The one market-data schema (``../shared/data/README.md``), shared by every reader and writer.

A file ``data/<symbol lowercase>/combined_15m.parquet`` holds, per 15-minute candle open time
(UTC, strictly increasing, no gaps, no duplicates), the primary symbol's OHLCV, the two
correlation symbols' OHLCV under the *role* suffixes ``_btc`` and ``_eth`` (whatever symbols
fill those roles), the forward-filled ``funding_rate`` and the open-interest change ``oi_change``.

Funding convention (parquet metadata ``perpbot.funding_convention``): on which row the rate
settled at an 8-hour mark first appears. It matters to the simulator, which must charge the rate
Binance actually settled at that mark (defect 19 of issue 7):

* ``settlement_row``: the settlement candle's row carries the rate settled at its open
  (``perpbot fetch`` stamps a rate settled at 08:00:00.003 on the 08:00 candle; ``synth`` too).
* ``settlement_or_next_row``: the new rate shows up on the settlement row or on the next one (the
  recorded files in ``../shared/data``: a settlement stamped a few ms after the mark landed on
  the 08:15 row in 43–44 % of settlements). The settled rate is then the next row's value when
  the rate changes there, else the settlement row's.

A file without the key is classified by ``detect_funding_convention`` (a settlement whose rate
changes one row after the mark and not on it ⇒ ``settlement_or_next_row``). The rule for
``settlement_or_next_row`` also charges the right rate on ``settlement_row`` data, where the rate
never changes on the row after a mark.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from perpbot.symbols import symbol_dir_name

if TYPE_CHECKING:  # numpy is imported by the functions that use it: path helpers stay light (CLI)
    import numpy as np
    import numpy.typing as npt

INDEX_NAME = "timestamp"
OHLCV = ("open", "high", "low", "close", "volume")
BTC_COLS = tuple(f"{c}_btc" for c in OHLCV)
ETH_COLS = tuple(f"{c}_eth" for c in OHLCV)
MICRO_COLS = ("oi_change", "funding_rate")
ALL_COLUMNS = OHLCV + BTC_COLS + ETH_COLS + MICRO_COLS
DATA_FILE_NAME = "combined_15m.parquet"
BAR_MS = 15 * 60_000
FUNDING_INTERVAL_MS = 8 * 3600 * 1000
FUNDING_CONVENTION_KEY = b"perpbot.funding_convention"
FUNDING_AT_SETTLEMENT_ROW = "settlement_row"
FUNDING_AT_SETTLEMENT_OR_NEXT_ROW = "settlement_or_next_row"
FUNDING_CONVENTIONS = (FUNDING_AT_SETTLEMENT_ROW, FUNDING_AT_SETTLEMENT_OR_NEXT_ROW)


def data_path(data_dir: Path, symbol: str) -> Path:
    """``<data_dir>/<symbol lowercase>/combined_15m.parquet``."""
    return Path(data_dir) / symbol_dir_name(symbol) / DATA_FILE_NAME


def model_dir(models_root: Path, symbol: str) -> Path:
    """``<models_root>/<symbol lowercase>/``."""
    return Path(models_root) / symbol_dir_name(symbol)


def _late_settlements(t: np.ndarray, f: np.ndarray, bar_ms: int) -> np.ndarray:
    """Settlement rows (open at an 8-hour mark, next row one bar later) whose rate did NOT change
    on the row itself but changes on the next row: where a recording showed the new rate late."""
    import numpy as np

    if f.size < 3:
        return np.zeros(0, dtype=np.int64)
    i = np.flatnonzero((t[1:-1] % FUNDING_INTERVAL_MS == 0) & (t[2:] - t[1:-1] == bar_ms)) + 1
    cur, prev, nxt = f[i], f[i - 1], f[i + 1]
    late = (cur == prev) & (nxt != cur) & np.isfinite(nxt) & np.isfinite(cur)
    return i[late]


def detect_funding_convention(
    open_time_ms: npt.ArrayLike, funding: npt.ArrayLike, bar_ms: int = BAR_MS
) -> str:
    """Classify a forward-filled funding column: ``settlement_or_next_row`` when some settlement's
    new rate first appears on the row after the mark (none on the mark's row), else ``settlement_row``."""
    import numpy as np

    t = np.asarray(open_time_ms, dtype=np.int64)
    f = np.asarray(funding, dtype=np.float64)
    if _late_settlements(t, f, bar_ms).size:
        return FUNDING_AT_SETTLEMENT_OR_NEXT_ROW
    return FUNDING_AT_SETTLEMENT_ROW


def settled_funding(
    open_time_ms: npt.ArrayLike, funding: npt.ArrayLike, convention: str, bar_ms: int = BAR_MS
) -> np.ndarray:
    """Per row, the rate to charge if the row is a settlement: the rate settled at its open.

    ``settlement_row``: the row's own value. ``settlement_or_next_row``: on a settlement row whose
    rate did not change but changes one bar later, that next value; every other row keeps its own.
    """
    import numpy as np

    if convention not in FUNDING_CONVENTIONS:
        raise ValueError(f"unknown funding convention {convention!r} (expected one of {FUNDING_CONVENTIONS})")
    t = np.asarray(open_time_ms, dtype=np.int64)
    f = np.asarray(funding, dtype=np.float64)
    out = f.copy()
    if convention == FUNDING_AT_SETTLEMENT_OR_NEXT_ROW:
        late = _late_settlements(t, f, bar_ms)
        out[late] = f[late + 1]
    return out
