"""perpbot chooses Arrow's system allocator before pyarrow loads, unless the operator chose one."""

from __future__ import annotations

import os
import subprocess
import sys


def _pool_after_import(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if env_value is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = env_value
    code = "import perpbot.data.market_arrays, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_perpbot_selects_the_system_pool() -> None:
    assert _pool_after_import(None) == "system"


def test_an_operator_choice_of_pool_is_kept() -> None:
    assert _pool_after_import("mimalloc") == "mimalloc"
