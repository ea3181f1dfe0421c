"""PBO and the deflated Sharpe ratio behave as their definitions say on controlled matrices."""

from __future__ import annotations

import numpy as np

from perpbot.optimize.stats import deflated_sharpe, pbo_cscv


def noise(seed: int = 0, t: int = 320, n: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, (t, n))


def test_pbo_of_pure_noise_is_near_one_half() -> None:
    vals = [pbo_cscv(noise(s)).pbo for s in range(4)]
    assert all(v is not None for v in vals)
    assert 0.3 < float(np.mean(vals)) < 0.7  # type: ignore[arg-type]


def test_pbo_of_a_truly_better_trial_is_near_zero() -> None:
    r = noise(1)
    r[:, 5] += 0.004
    res = pbo_cscv(r)
    assert res.pbo is not None and res.pbo < 0.05
    assert res.blocks == 16 and res.splits == 12870


def test_pbo_needs_two_trials_and_enough_periods() -> None:
    assert pbo_cscv(noise(t=100, n=1)).pbo is None
    assert pbo_cscv(noise(t=5, n=10)).pbo is None


def test_dsr_falls_with_more_trials_and_rises_with_skill() -> None:
    r = noise(2, n=200)
    srs = r.mean(axis=0) / r.std(axis=0, ddof=1)
    best = int(np.argmax(srs))
    few = deflated_sharpe(r[:, best], r[:, [best, 0, 1]])
    many = deflated_sharpe(r[:, best], r)
    assert many.expected_max_sharpe > few.expected_max_sharpe
    assert many.dsr is not None and few.dsr is not None and many.dsr < few.dsr
    assert many.dsr < 0.95  # the best of 200 noise series is not significant after deflation
    skilled = r.copy()
    skilled[:, best] += 0.005
    assert deflated_sharpe(skilled[:, best], skilled).dsr > 0.99  # type: ignore[operator]


def test_dsr_one_trial_has_no_deflation() -> None:
    r = noise(3, n=1)
    assert deflated_sharpe(r[:, 0], r).expected_max_sharpe == 0.0
