"""Fixtures shared by every test folder: the real-data location and synthetic markets.

The real-data tier reads ``<repo>/../shared/data`` or ``$PERPBOT_REAL_DATA`` (present in CI, never
copied into the repo) and is skipped when that folder is absent. Synthetic fixtures are
session-scoped because they are deterministic; treat them as read-only (``.copy()`` before
changing a frame).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from perpbot.data.schema import data_path
from perpbot.data.store import save_market
from perpbot.data.synth import synth_market as make_synth_market

REPO_ROOT = Path(__file__).resolve().parents[1]
# ``tests.support`` must import under a bare ``pytest`` too (``python -m pytest`` already puts the
# working directory on sys.path). ``pythonpath = ["."]`` in pyproject would make this redundant.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from tests.support.async_timeout import DEFAULT_S, bounded, limit_of  # noqa: E402 (needs the path above)

# ``PERPBOT_REAL_DATA`` points elsewhere (a git worktree one level deeper than the main checkout).
REAL_DATA_DIR = Path(os.environ.get("PERPBOT_REAL_DATA") or REPO_ROOT.parent / "shared" / "data")
SYNTH_SYMBOLS = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")


@pytest.fixture(scope="session", autouse=True)
def _input_cache_in_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Backtests cache their inputs (``backtest.input_cache``): never into the user's cache folder
    from a test, and child processes (CLI tests) inherit the setting."""
    folder = tmp_path_factory.mktemp("input_cache")
    before = os.environ.get("PERPBOT_CACHE_DIR")
    os.environ["PERPBOT_CACHE_DIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("PERPBOT_CACHE_DIR", None)
    else:
        os.environ["PERPBOT_CACHE_DIR"] = before


@pytest.fixture(autouse=True)
def _fresh_weight_budget() -> Iterator[None]:
    """Binance counts request weight per IP and minute, so the adapter shares one budget per
    process (``budget.shared_budget``). In the test process that one budget would carry the
    weight of every simulator test that ran in the same minute into the next test, whose reads
    then wait for the next minute at a random point (a manual close's booking held ~25 s in CI):
    each test starts with a fresh one, as each bot process does."""
    from perpbot.exchange.binance import budget

    budget._shared = None
    yield
    budget._shared = None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """``../shared/data`` (recorded Binance candles); skips the test when it is not there."""
    if not (REAL_DATA_DIR / "README.md").is_file():
        pytest.skip(f"real data not available at {REAL_DATA_DIR}")
    return REAL_DATA_DIR


@pytest.fixture(scope="session")
def synth_market() -> pd.DataFrame:
    """60 days of synthetic XRPUSDT (seed 7) in the data schema. Read-only."""
    return make_synth_market(days=60, seed=7)


@pytest.fixture(scope="session")
def synth_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with synthetic ``combined_15m.parquet`` files for the three default symbols."""
    root = tmp_path_factory.mktemp("synth_data")
    for symbol in SYNTH_SYMBOLS:
        frame = make_synth_market(days=60, seed=7, symbol=symbol)
        save_market(frame, data_path(root, symbol), closed_through_ms=int(frame.index.asi8[-1]))
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``realdata`` skip cleanly when the shared data is absent, fixture or not."""
    if (REAL_DATA_DIR / "README.md").is_file():
        return
    skip = pytest.mark.skip(reason=f"real data not available at {REAL_DATA_DIR}")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("async_timeout", f"seconds an async test may run (default {DEFAULT_S:g})", default="")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Every async test runs under ``async_timeout`` (tests/support/async_timeout.py): a hang fails
    that test with a dump of every asyncio task instead of stalling the run."""
    fn = getattr(item, "obj", None)
    if not inspect.iscoroutinefunction(fn):
        return (yield)
    item.obj = bounded(fn, limit_of(item), item.nodeid)  # type: ignore[attr-defined]
    try:
        return (yield)
    finally:
        item.obj = fn  # type: ignore[attr-defined]
