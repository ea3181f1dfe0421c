"""Broken market files for the bad-input tests: the three ways a parquet file goes wrong in the
issue's list (empty, truncated, gap-ridden), each with the fragment the loader's one-line error
must contain. Shared so that every command that reads market data is held to the same contract.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from perpbot.data.store import save_market


def _empty(path: Path, market: pd.DataFrame) -> None:
    path.write_bytes(b"")


def _truncated(path: Path, market: pd.DataFrame) -> None:
    save_market(market.iloc[:500], path, closed_through_ms=None)
    path.write_bytes(path.read_bytes()[:-300])


def _gappy(path: Path, market: pd.DataFrame) -> None:
    market.iloc[:500].drop(index=market.index[100:103]).to_parquet(path)


MakeBad = Callable[[Path, pd.DataFrame], None]

BAD_PARQUETS = pytest.mark.parametrize(
    ("make_bad", "fragment"),
    [
        (_empty, "empty file (0 bytes)"),
        (_truncated, "unreadable parquet"),
        (_gappy, "1 gap(s) in the 15-minute sequence (3 candle(s) missing)"),
    ],
    ids=["empty", "truncated", "gap-ridden"],
)


def foreign(df: pd.DataFrame, path: Path) -> Path:
    """Write like a foreign tool would: plain pandas, no validation, no perpbot metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path)
    return path


def forbid_recompute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make decoding a market file or computing its features fail the test: what the input cache
    (``backtest.input_cache``) serves must not be computed again."""

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("recomputed although the input cache held a valid entry")

    monkeypatch.setattr("perpbot.data.market_arrays.load_market_arrays", boom)
    monkeypatch.setattr("perpbot.ml.features.feature_arrays", boom)
