"""Importing the CLI entry point stays light: heavy libraries load only in the command that needs
them (issue 13, imports), so ``perpbot --help`` never pays for pandas, plotting or ML runtimes."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "pandas",
    "numpy",
    "pyarrow",
    "pydantic_settings",
    "matplotlib",
    "plotly",
    "lightgbm",
    "torch",
    "onnxruntime",
    "ccxt",
    "aiohttp",
    "talib",
)


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


def test_cli_main_imports_no_heavy_library() -> None:
    loaded = _modules_after("import perpbot.cli.main")
    assert sorted(loaded & set(HEAVY)) == []


def test_the_check_sees_a_heavy_import() -> None:
    # The probe itself works: a command module that needs pandas does load it.
    assert "pandas" in _modules_after("import perpbot.cli.main\nimport perpbot.data.synth")
