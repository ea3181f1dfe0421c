"""The history routes a runtime seeds its window from (``runtime.micro_seed``): ``fundingRate``
says what the venue settled (and charges), whichever row the recording shows a new rate on;
``openInterestHist`` serves only the last 30 days, at most 500 rows, as Binance does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd

from perpbot.data.schema import FUNDING_AT_SETTLEMENT_OR_NEXT_ROW, data_path
from perpbot.data.store import save_market
from perpbot.data.synth import synth_market
from perpbot.simulator.server import SimServer

BAR = 900_000
H8 = 8 * 3_600_000
DAY = 86_400_000


def _late_recording(folder: Path) -> pd.DataFrame:
    """40 synthetic days whose funding column shows every new rate one row after its settlement
    (the ``settlement_or_next_row`` quirk of the recorded files)."""
    frame = synth_market(40, 5, symbol="XRPUSDT")
    f = frame["funding_rate"].to_numpy()
    frame["funding_rate"] = np.concatenate(([f[0]], f[:-1]))
    save_market(frame, data_path(folder, "XRPUSDT"), funding_convention=FUNDING_AT_SETTLEMENT_OR_NEXT_ROW)
    return frame


async def _get(srv: SimServer, path: str, **params: Any) -> Any:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{srv.port}{path}", params=params) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_funding_history_gives_the_settled_rate_and_open_interest_only_30_days(
    start_sim: Callable[..., Any], tmp_path: Path
) -> None:
    frame = _late_recording(tmp_path)
    times = frame.index.as_unit("ms").asi8
    start = int(times[0]) + 35 * DAY
    srv: SimServer = await start_sim(symbols=("XRPUSDT",), data_dir=tmp_path, from_ms=start, days=1)
    now = srv.venue.now_ms
    rows = await _get(srv, "/fapi/v1/fundingRate", symbol="XRPUSDT", startTime=now - 3 * DAY, limit=1000)
    assert len(rows) == 9 and all(r["fundingTime"] % H8 == 0 for r in rows)
    column = frame["funding_rate"].to_numpy()
    for r in rows:
        i = int(np.searchsorted(times, r["fundingTime"]))
        # The recording shows the new rate on the next row; the venue settled it at the mark.
        assert float(r["fundingRate"]) == column[i + 1] != column[i]
    # The current rate (premiumIndex) is still the recorded column at the last closed candle.
    prem = await _get(srv, "/fapi/v1/premiumIndex", symbol="XRPUSDT")
    assert float(prem["lastFundingRate"]) == column[int(np.searchsorted(times, now - BAR))]

    # openInterestHist: nothing older than 30 days, whatever startTime asks; at most 500 rows.
    old = await _get(
        srv,
        "/futures/data/openInterestHist",
        symbol="XRPUSDT",
        period="15m",
        startTime=now - 35 * DAY,
        limit=500,
    )
    assert len(old) == 500 and old[0]["timestamp"] == now - 30 * DAY
    last = await _get(srv, "/futures/data/openInterestHist", symbol="XRPUSDT", period="15m", limit=500)
    assert len(last) == 500 and last[-1]["timestamp"] == now
