"""CLI hygiene: ``-h`` everywhere, ``--version``, help that a pipe gets unwrapped, and run
outputs kept out of git."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from perpbot import __version__
from tests.support.cli import invoke

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (
    "config",
    "fetch",
    "synth",
    "features",
    "train",
    "tune",
    "deploy",
    "backtest",
    "demo",
    "models",
    "data",
)


def test_version() -> None:
    res = invoke("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"perpbot {__version__}"


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_dash_h_is_help(command: str) -> None:
    res = invoke(*([command] if command else []), "-h")
    assert res.exit_code == 0, res.output
    assert "Usage: " in res.stdout
    assert re.search(r"--help\s+-h\s", res.stdout), res.stdout  # -h is listed as the short form


def test_every_command_is_listed() -> None:
    listed = invoke("-h").stdout
    for command in COMMANDS:
        assert f" {command} " in listed, command


def test_piped_help_is_not_wrapped_at_80_columns() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    out = subprocess.run(
        [sys.executable, "-m", "perpbot.cli.main", "backtest", "-h"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    ).stdout
    line = next(line for line in out.splitlines() if "--kill-switch" in line)
    assert "reset-after=DAYS (automatic reset)" in line  # the whole description on one line


def test_run_outputs_are_git_ignored() -> None:
    ignored = (ROOT / ".gitignore").read_text().split()
    for folder in ("/demo_out/", "/runs/", "/models/"):
        assert folder in ignored
