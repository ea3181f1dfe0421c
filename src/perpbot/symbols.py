"""Symbol names: one validation rule and one folder-name rule for the whole project."""

from __future__ import annotations

import re

from perpbot.errors import ConfigError

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{1,20}USDT$")


def normalize_symbol(raw: str, *, source: str = "symbol") -> str:
    """Upper-case and validate a USDT-M perpetual symbol such as ``XRPUSDT``.

    ``source`` names where the value came from (an env variable or a flag) so that the error
    message points at the culprit.
    """
    sym = raw.strip().upper()
    if not _SYMBOL_RE.match(sym):
        raise ConfigError(f"{source}={raw!r}: not a USDT-M perpetual symbol (expected e.g. XRPUSDT)")
    return sym


def symbol_dir_name(symbol: str) -> str:
    """Folder name used under ``data/`` and ``models/`` (``XRPUSDT`` -> ``xrpusdt``)."""
    return symbol.lower()
