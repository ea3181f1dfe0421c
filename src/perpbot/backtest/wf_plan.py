"""Walk-forward planning: the K out-of-sample test windows, checked before any training.

One job: turn the run's span into ``K + 1`` chronological blocks of equal numbers of candle open
times (block 0 trains only, blocks 1…K are tested; ``walk_forward`` has the protocol) and refuse,
in one line, a K the data cannot fill. Running the folds is ``wf_folds``; reporting ``wf_report``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from perpbot.backtest.prepare import window_slice
from perpbot.data.schema import BAR_MS
from perpbot.errors import ConfigError, InsufficientDataError

if TYPE_CHECKING:
    import pandas as pd

MIN_FOLD_BARS = 96  # one day of 15-minute candles per symbol in every test window


def _window(times: np.ndarray, start_ms: int | None, end_ms: int | None) -> np.ndarray:
    return times[window_slice(times, start_ms, end_ms)]


def day(ms: int) -> str:
    """``yy-mm-dd`` (UTC) of an epoch-millisecond time: how folds are named to the user."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%y-%m-%d")


def fold_windows(
    markets: Mapping[str, pd.DataFrame], k: int, start_ms: int | None, end_ms: int | None
) -> list[tuple[int, int]]:
    """The K test windows ``[start, end)`` (open times): blocks 1..K of K+1 equal blocks."""
    if k < 1:
        raise ConfigError(f"--walk-forward={k}: need at least 1 fold")
    times = np.unique(
        np.concatenate([_window(m.index.as_unit("ms").asi8, start_ms, end_ms) for m in markets.values()])
    )
    n = times.size
    if n < (k + 1) * 2:
        raise InsufficientDataError(f"walk-forward: {n} candles cannot make {k + 1} blocks")
    edges = [round(j * n / (k + 1)) for j in range(k + 2)]
    out: list[tuple[int, int]] = []
    for j in range(1, k + 1):
        a, b = edges[j], edges[j + 1]
        end = int(times[b]) if b < n else int(times[-1]) + BAR_MS
        out.append((int(times[a]), end))
    return out


def check_fold_windows(
    markets: Mapping[str, pd.DataFrame], k: int, start_ms: int | None, end_ms: int | None
) -> list[tuple[int, int]]:
    """The K test windows, or one ``ConfigError`` naming the smallest fold — before any training.

    Too many folds used to fail after minutes of training with "no candle inside the backtest
    window". Here every block (each test window and the training-only block before the first one)
    must hold at least :data:`MIN_FOLD_BARS` candles of some symbol; the message names the block with
    the fewest and the largest K the data allows. A symbol listed later than the others is allowed:
    a block before its listing simply trains no model for it (the report says so per fold).
    """

    def smallest(kk: int) -> tuple[int, str, int, int, int] | None:
        try:
            windows = fold_windows(markets, kk, start_ms, end_ms)
        except InsufficientDataError:
            return (0, next(iter(markets)), 0, 0, 0)
        first = windows[0][0]
        blocks = [
            (0, start_ms if start_ms is not None else -(2**62), first),
            *[(j, a, b) for j, (a, b) in enumerate(windows, start=1)],
        ]
        worst: tuple[int, str, int, int, int] | None = None
        for j, a, b in blocks:
            counts = []
            for sym, m in markets.items():
                times = m.index.as_unit("ms").asi8
                n = int(np.searchsorted(times, b, side="left") - np.searchsorted(times, a, side="left"))
                counts.append((n, sym))
            n, sym = max(counts, key=lambda c: c[0])  # the best-covered symbol of this block
            if worst is None or n < worst[0]:
                worst = (n, sym, j, a, b)
        return worst

    worst = smallest(k)
    if worst is not None and worst[0] >= MIN_FOLD_BARS:
        return fold_windows(markets, k, start_ms, end_ms)
    feasible = next((kk for kk in range(k - 1, 0, -1) if (w := smallest(kk)) and w[0] >= MIN_FOLD_BARS), 0)
    hint = f"use --walk-forward {feasible} or fewer" if feasible else "the data is too short for any fold"
    if worst is None or worst[4] == worst[3] == 0:
        raise ConfigError(f"--walk-forward={k}: the window has too few candles for {k + 1} blocks; {hint}")
    n, sym, j, a, b = worst
    what = "the training block before fold 1" if j == 0 else f"fold {j} ({day(a)} → {day(b)})"
    raise ConfigError(
        f"--walk-forward={k}: {what} holds at most {n} candles of {sym}, fewer than {MIN_FOLD_BARS} "
        f"(one day) needed in every block; {hint}"
    )
