"""Shared fixtures of the runtime tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.runtime.opsenv import TRADED
from tests.runtime.simproc import Simulator


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A fresh ``perpbot simulate`` child for the two traded symbols and BTC/ETH (3 days); a
    module that needs another market defines its own ``sim``."""
    s = Simulator([*TRADED, "BTCUSDT", "ETHUSDT"], 3)
    yield s
    s.stop()
