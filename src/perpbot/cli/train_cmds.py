"""Placeholder until its module lands in this change; replaced by the owning work package."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
