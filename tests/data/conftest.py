"""Fixtures shared by the data-layer tests."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture
def small(synth_market: pd.DataFrame) -> pd.DataFrame:
    """200 candles, a private copy."""
    return synth_market.iloc[:200].copy()
