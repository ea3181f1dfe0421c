"""Running perpbot the way a user does: the typer app through ``CliRunner`` and the ``scripts/``
files, plus the bad-input contract every command is held to (exit 2, one ``error:`` line)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from typer.testing import CliRunner, Result

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "scripts"


def invoke(*args: str) -> Result:
    """Run ``perpbot <args>`` through the real typer app (stdout and stderr kept apart)."""
    from perpbot.cli.main import app

    return CliRunner().invoke(app, list(args))


def one_line_error(result: Result, *fragments: str) -> str:
    """Assert the bad-input contract (exit 2, one ``error:`` line) and return that line."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>`` as a module (the scripts are files, not package modules)."""
    path = SCRIPTS_DIR / name
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
