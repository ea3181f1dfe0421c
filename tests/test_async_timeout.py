"""The suite's safety net for hangs (tests/support/async_timeout.py): an async test that runs over
its bound fails with where every task waits, instead of stalling the whole run."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.async_timeout import bounded

HANGING = """
import asyncio
import pytest

async def waits_for_a_fill_that_never_comes():
    await asyncio.Event().wait()

@pytest.mark.async_timeout(1)
async def test_marked_hangs():
    await waits_for_a_fill_that_never_comes()

async def test_quick():
    await asyncio.sleep(0)

async def test_default_bound_hangs():
    await asyncio.sleep(3600)
"""


async def test_an_async_test_over_its_bound_fails_with_every_tasks_await_chain() -> None:
    async def helper_waits() -> None:
        await asyncio.Event().wait()

    async def the_test() -> None:
        side = asyncio.create_task(helper_waits(), name="side-task")
        try:
            await asyncio.sleep(3600)
        finally:
            side.cancel()

    with pytest.raises(pytest.fail.Exception) as info:
        await bounded(the_test, 0.2, "t::x")()
    text = str(info.value)
    assert text.startswith("t::x did not finish within 0.2 s (async_timeout")
    assert "in the_test" in text and "--- task 'side-task'" in text and "in helper_waits" in text


async def test_a_test_within_its_bound_returns_its_result() -> None:
    async def quick(x: int) -> int:
        return x + 1

    assert await bounded(quick, 5, "t::q")(1) == 2


def test_the_conftest_hook_applies_the_marker_and_the_ini_default(tmp_path: Path) -> None:
    (tmp_path / "test_hangs.py").write_text(HANGING)
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_addoption, pytest_runtest_call  # noqa: F401\n"
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "async_timeout=2",
            "-o",
            "markers=async_timeout(seconds): bound",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    assert "test_hangs.py::test_marked_hangs did not finish within 1 s" in out
    assert "in waits_for_a_fill_that_never_comes" in out
    assert "test_hangs.py::test_default_bound_hangs did not finish within 2 s" in out
    assert "2 failed, 1 passed" in out
