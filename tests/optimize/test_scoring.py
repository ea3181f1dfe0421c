"""The four metrics on hand-checked inputs, and the unknown-metric error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perpbot.errors import ConfigError
from perpbot.optimize.scoring import CAP, calmar, check_metric, max_drawdown, profit_factor, score, sharpe


def test_profit_factor() -> None:
    assert profit_factor(np.array([3.0, -1.0, 1.0, -1.0])) == 2.0
    assert profit_factor(np.array([1.0])) == CAP
    assert profit_factor(np.array([])) == 0.0


def test_sharpe_and_drawdown_and_calmar() -> None:
    d = np.array([0.01, -0.01, 0.02, 0.0])
    assert sharpe(d) == pytest.approx(d.mean() / d.std(ddof=1) * math.sqrt(365))
    assert sharpe(np.zeros(5)) == 0.0
    assert max_drawdown(np.array([0.1, -0.22, 0.0])) == pytest.approx(0.2)
    assert calmar(np.array([0.1, -0.22, 0.0])) == pytest.approx((-0.12 * 365 / 3) / 0.2)


def test_net_is_usdt_sum() -> None:
    assert score("net", np.array([5.0, -2.0]), np.zeros(3), 1000.0) == 3.0


def test_unknown_metric() -> None:
    with pytest.raises(
        ConfigError, match=r"--metric 'sortino': unknown metric; choose one of net, pf, sharpe, calmar"
    ):
        check_metric("sortino")
