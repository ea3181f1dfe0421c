"""LightGBM parameters: SPEC §6.1 precedence (tuned JSON > ``active_lgbm_params.json`` > defaults)
and the JSON contract (``best_trial.params`` or a flat mapping; ``weight_scale`` scales the sample
weights instead of going to LightGBM). Kept apart from training so tuning and the CLI resolve
parameters without importing the training orchestration."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perpbot.errors import ConfigError

ACTIVE_PARAMS_FILE = "active_lgbm_params.json"


@dataclass(frozen=True)
class ResolvedParams:
    """LightGBM parameters after precedence, the weight scale taken out, and where they came from."""

    params: dict[str, Any]
    weight_scale: float
    source: str


def default_resolved_params() -> ResolvedParams:
    """The SPEC §6.1 built-in defaults, weight scale separated."""
    from perpbot.ml.lgbm_model import DEFAULT_LGBM_PARAMS

    params = dict(DEFAULT_LGBM_PARAMS)
    scale = float(params.pop("weight_scale"))
    return ResolvedParams(params=params, weight_scale=scale, source="defaults")


def params_from_json(data: Any, where: str) -> dict[str, Any]:
    """Extract the parameter mapping of a tune-results / active-params JSON (or a flat mapping)."""
    if isinstance(data, Mapping):
        best = data.get("best_trial")
        if isinstance(best, Mapping) and isinstance(best.get("params"), Mapping):
            return dict(best["params"])
        if isinstance(data.get("params"), Mapping):
            return dict(data["params"])
        if data and all(isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()):
            return dict(data)
    raise ConfigError(f"{where}: no parameters found (expected best_trial.params, params, or a flat mapping)")


def load_params_file(path: Path) -> dict[str, Any]:
    """Read a params JSON; a missing or malformed file is a one-line ``ConfigError``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: tuned-params file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return params_from_json(data, str(path))


def resolve_lgbm_params(
    sym_dir: Path, tuned_params: Path | Mapping[str, Any] | None = None
) -> ResolvedParams:
    """Apply the precedence tuned JSON > ``active_lgbm_params.json`` > defaults.

    Unknown keys are refused rather than silently passed to LightGBM: a typo in a hand-edited file
    would otherwise train with a default and nobody would notice.
    """
    defaults = default_resolved_params()
    if tuned_params is not None:
        if isinstance(tuned_params, Mapping):
            override, source = params_from_json(tuned_params, "tuned params"), "tuned-params (mapping)"
        else:
            override, source = load_params_file(Path(tuned_params)), f"tuned-params {tuned_params}"
    elif (Path(sym_dir) / ACTIVE_PARAMS_FILE).is_file():
        active = Path(sym_dir) / ACTIVE_PARAMS_FILE
        override, source = load_params_file(active), str(active)
    else:
        override, source = {}, "defaults"
    scale = float(override.pop("weight_scale", defaults.weight_scale))
    unknown = sorted(set(override) - set(defaults.params))
    if unknown:
        raise ConfigError(f"{source}: unknown LightGBM parameter {unknown[0]!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"{source}: weight_scale={scale!r} must be a positive number")
    params = {**defaults.params, **override}
    return ResolvedParams(params=params, weight_scale=scale, source=source)
