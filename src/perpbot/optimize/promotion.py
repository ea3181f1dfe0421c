"""Promotion: the best parameters become per-symbol overrides only when the verdict passes.

The overrides are ``<PARAM>_<SYMBOL>=value`` lines, the names ``perpbot.config`` already reads
from ``.env`` (``PER_SYMBOL_PARAMS``). Other lines of the file are kept as they are; the five
keys of the symbol are replaced. The previous file is kept as ``<file>.prev`` and the new one
is written atomically. Never silent: the caller prints what was written, or why nothing was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from perpbot.config import PER_SYMBOL_PARAMS
from perpbot.fileio import atomic_write_text
from perpbot.optimize.space import to_signal_params

_KEY = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def override_lines(symbol: str, values: Mapping[str, float | int]) -> dict[str, str]:
    """``{"ATR_SL_MULT_XRPUSDT": "1.5", ...}`` for the symbol's five parameters."""
    p = to_signal_params(values)
    fields = {
        "ATR_SL_MULT": p.atr_sl_mult,
        "ATR_TP_MULT": p.atr_tp_mult,
        "SIGNAL_THRESHOLD": p.signal_threshold,
        "ADX_THRESHOLD": p.adx_threshold,
        "VOL_MULTIPLIER": p.vol_multiplier,
    }
    return {f"{name}_{symbol}": repr(fields[name]) for name in PER_SYMBOL_PARAMS}


def write_overrides(path: Path, symbol: str, values: Mapping[str, float | int]) -> dict[str, str]:
    """Merge the symbol's overrides into ``path`` (created if absent); returns what was written."""
    new = override_lines(symbol, values)
    old_text = path.read_text(encoding="utf-8") if path.is_file() else ""
    kept = []
    for line in old_text.splitlines():
        m = _KEY.match(line)
        if m and m.group(1) in new:
            continue
        kept.append(line)
    if old_text:
        atomic_write_text(path.with_name(path.name + ".prev"), old_text, mode=0o600)
    block = [f"# perpbot optimize: {symbol} (promoted; previous file kept as {path.name}.prev)"]
    block += [f"{k}={v}" for k, v in new.items()]
    atomic_write_text(path, "\n".join([*kept, *block]) + "\n", mode=0o600)  # .env may hold keys
    return new
