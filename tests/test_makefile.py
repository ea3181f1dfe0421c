"""The lighter install: ``make demo`` installs only the core set (no torch); ``make test`` adds
the dev tools and the neural-net extra. Checked on ``make -n`` (nothing is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def _commands(target: str, tmp_path: Path) -> list[str]:
    """What ``make -n target`` would run on a fresh machine (no virtualenv yet)."""
    out = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}", "PY=python3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.splitlines()


def _plan(target: str, tmp_path: Path) -> list[str]:
    return [
        line for line in _commands(target, tmp_path) if "pip install" in line and "--upgrade pip" not in line
    ]


def test_demo_installs_the_core_set_only(tmp_path: Path) -> None:
    installs = _plan("demo", tmp_path)
    assert installs and all(line.endswith("-e .") for line in installs), installs
    assert not any("nn" in line or "dev" in line for line in installs)


def test_tests_install_dev_and_nn(tmp_path: Path) -> None:
    installs = _plan("test", tmp_path)
    assert any(line.endswith("-e '.[dev,nn]'") for line in installs), installs


def test_torch_is_only_in_the_nn_extra() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith(("torch", "onnxscript")) for dep in project["dependencies"])
    assert any(dep.startswith("torch") for dep in project["optional-dependencies"]["nn"])


@pytest.mark.parametrize("target", ["demo", "test", "bench"])
def test_perpbot_bytecode_is_written_after_the_install_and_before_the_command(
    target: str, tmp_path: Path
) -> None:
    """An editable install writes no bytecode, and with PYTHONDONTWRITEBYTECODE (CI images) Python
    never writes it: every perpbot process would compile every module from source again."""
    lines = _commands(target, tmp_path)
    compiled = [
        i for i, line in enumerate(lines) if "-m compileall" in line and line.rstrip().endswith("src")
    ]
    installs = [i for i, line in enumerate(lines) if "pip install" in line]
    assert compiled and installs, lines
    assert max(installs) < compiled[0] < len(lines) - 1, lines
