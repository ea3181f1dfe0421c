"""Typed access to request parameters with Binance's error codes (-1102 missing, -1100 illegal
characters, -1130 invalid value), so handlers read like the API documentation."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

from perpbot.simulator.errors import BinanceError, bad_param, missing

E = TypeVar("E", bound=Enum)
_DECIMAL_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


class Params:
    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = dict(raw)

    def get(self, name: str) -> str | None:
        v = self.raw.get(name)
        return v if v not in (None, "") else None

    def req(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise missing(name)
        return v

    def int(
        self, name: str, default: int | None = None, *, lo: int | None = None, hi: int | None = None
    ) -> int:
        v = self.get(name)
        if v is None:
            if default is None:
                raise missing(name)
            return default
        try:
            n = int(v)
        except ValueError:
            raise BinanceError(
                -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
            ) from None
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            raise bad_param(name)
        return n

    def opt_int(self, name: str) -> int | None:
        return self.int(name) if self.get(name) is not None else None

    def decimal(self, name: str) -> float:
        v = self.req(name)
        if not _DECIMAL_RE.match(v):
            raise BinanceError(
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
            )
        x = float(v)
        if not math.isfinite(x):
            raise bad_param(name)
        return x

    def bool(self, name: str, default: bool = False) -> bool:
        v = self.get(name)
        if v is None:
            return default
        if v.lower() not in ("true", "false"):
            raise bad_param(name)
        return v.lower() == "true"

    def enum(self, name: str, cls: type[E], code: int = -1130) -> E:
        v = self.req(name)
        try:
            return cls(v)
        except ValueError:
            if code == -1116:
                raise BinanceError(-1116, "Invalid orderType.") from None
            if code == -1117:
                raise BinanceError(-1117, "Invalid side.") from None
            raise bad_param(name) from None
