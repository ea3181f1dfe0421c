"""Shared pieces of the optimize tests: a small synthetic market on disk and the PostgreSQL URL.

The PostgreSQL tests need a real server (``.ci/run`` starts one and exports
``PERPBOT_TEST_PG_URL``). They skip only when that variable is absent outside CI; with ``CI=true``
a missing URL is a failure, so CI can never pass them by skipping.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd
import pytest

from perpbot.data.schema import data_path
from perpbot.data.store import save_market
from perpbot.data.synth import synth_market

SYMBOL = "XRPUSDT"
SYNTH_DAYS = 42  # 4032 candles: 3 folds of ≥ 7 days each, ~0.1 s per trial


@pytest.fixture(scope="session")
def market() -> pd.DataFrame:
    return synth_market(SYNTH_DAYS, seed=7)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory, market: pd.DataFrame) -> Path:
    root = tmp_path_factory.mktemp("optdata")
    path = data_path(root, SYMBOL)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_market(market, path)
    return root


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get("PERPBOT_TEST_PG_URL", "").strip()
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but PERPBOT_TEST_PG_URL is not set: .ci/run must start PostgreSQL")
        pytest.skip("PERPBOT_TEST_PG_URL not set (start one with scripts/pg_test_server.sh)")
    return url


@pytest.fixture
def study_name() -> str:
    """A fresh study name per test: the PostgreSQL database is shared by the whole session."""
    return f"t{uuid.uuid4().hex[:10]}"
