"""Numeric and date flag values with the one-line error contract (``ConfigError``, exit 2).

Why not typer's own types: a bad value must be one line naming the flag (``cli.common``), not a
usage box; and why a module of its own: the backtest command's flags use them, its module keeps
the command.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from perpbot.errors import ConfigError


def parse_number(
    raw: str | None, flag: str, *, low: float, high: float, low_inclusive: bool = True
) -> float | None:
    """A finite number in ``[low, high]`` (or ``(low, high]``); one-line error otherwise.

    Parsed here rather than by typer so that a bad value gets the one-line / exit-2 contract
    instead of a usage box.
    """
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"{flag}={raw!r}: not a number") from None
    ok_low = v >= low if low_inclusive else v > low
    if not (math.isfinite(v) and ok_low and v <= high):
        bound = "[" if low_inclusive else "("
        raise ConfigError(f"{flag}={raw!r}: must be in {bound}{low:g}, {high:g}]")
    return v


def parse_utc(raw: str | None, flag: str) -> datetime | None:
    """ISO date or date-time; naive means UTC; an explicit offset is converted to UTC."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag}={raw!r}: not a date (expected e.g. 2025-06-01 or 2025-06-01T12:00)"
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
