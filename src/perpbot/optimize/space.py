"""The search space: the five per-symbol strategy parameters (``PER_SYMBOL_PARAMS``) and ranges.

Why these ranges (also stated in the README): stops closer than 0.5 ATR are inside a 15-minute
candle's noise and beyond 4 ATR rarely trigger inside a day; take-profits up to 6 ATR allow
trend-following shapes; the rule score tops out at 6 points, so a threshold above 5 could never
pass the strength clause; ADX 0 disables the gate and 40 keeps only strong trends; a volume
multiple below 1 would call every above-average bar a surge. Steps are coarse on purpose: they
make the overrides readable and keep distinct trials meaningfully different.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution

from perpbot.config import PER_SYMBOL_PARAMS, SignalParams


@dataclass(frozen=True, slots=True)
class ParamRange:
    """One searched parameter: its env name, bounds and step."""

    env_name: str
    field: str  # SignalParams attribute
    low: float
    high: float
    step: float
    integer: bool = False

    def distribution(self) -> BaseDistribution:
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), step=int(self.step))
        return FloatDistribution(self.low, self.high, step=self.step)


SPACE: tuple[ParamRange, ...] = (
    ParamRange("ATR_SL_MULT", "atr_sl_mult", 0.5, 4.0, 0.1),
    ParamRange("ATR_TP_MULT", "atr_tp_mult", 0.5, 6.0, 0.1),
    ParamRange("SIGNAL_THRESHOLD", "signal_threshold", 2, 5, 1, integer=True),
    ParamRange("ADX_THRESHOLD", "adx_threshold", 0.0, 40.0, 1.0),
    ParamRange("VOL_MULTIPLIER", "vol_multiplier", 1.0, 4.0, 0.1),
)
assert tuple(r.env_name for r in SPACE) == PER_SYMBOL_PARAMS


def distributions() -> dict[str, BaseDistribution]:
    """Optuna distributions keyed by the env names (the names users see in the report)."""
    return {r.env_name: r.distribution() for r in SPACE}


def describe() -> dict[str, dict[str, Any]]:
    """The ranges as written into ``optimize.json`` and the study fingerprint."""
    return {r.env_name: {"low": r.low, "high": r.high, "step": r.step, "integer": r.integer} for r in SPACE}


def suggest(trial: optuna.Trial) -> dict[str, float | int]:
    """The trial's parameters (a WAITING trial from a plan or a retry already carries them)."""
    out: dict[str, float | int] = {}
    for r in SPACE:
        if r.integer:
            out[r.env_name] = trial.suggest_int(r.env_name, int(r.low), int(r.high), step=int(r.step))
        else:
            out[r.env_name] = trial.suggest_float(r.env_name, r.low, r.high, step=r.step)
    return out


def to_signal_params(values: Mapping[str, float | int]) -> SignalParams:
    """Env-named values → ``SignalParams`` (rounded to the step so 1.2000000000000002 reads 1.2)."""
    kw: dict[str, float | int] = {}
    for r in SPACE:
        v = values[r.env_name]
        kw[r.field] = int(v) if r.integer else round(float(v), 10)
    return SignalParams(**kw)  # type: ignore[arg-type]


def from_signal_params(p: SignalParams) -> dict[str, float | int]:
    """``SignalParams`` → env-named values."""
    return {r.env_name: getattr(p, r.field) for r in SPACE}


def qmc_plan(n: int, seed: int) -> list[dict[str, float | int]]:
    """The first ``n`` points of Optuna's scrambled Sobol sequence for ``seed`` (the ``qmc`` plan).

    Generated in an in-memory study, so the plan is a pure function of (n, seed): every worker
    count, and any kill and retry, evaluates the same parameter sets.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    mem = optuna.create_study(sampler=sampler, direction="maximize")
    dists = distributions()
    plan = []
    for _ in range(n):
        t = mem.ask(dists)
        plan.append({k: v if isinstance(v, int) else round(v, 10) for k, v in t.params.items()})
        mem.tell(t, 0.0)
    return plan
