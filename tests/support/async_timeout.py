"""A suite-wide bound on every async test, so that a hang fails one test with a diagnosis instead of
stopping the whole CI run (brief h15hang).

Why here and not pytest-timeout: the interesting part of an asyncio hang is *which coroutine waits
on what*, and only the event loop knows that. On expiry the test's task is left running while
every task of the loop is dumped with its stack (``Task.print_stack``), then the test is cancelled
(bounded: a ``finally`` that hangs too does not hang the run) and fails with the dump. A hang
outside the loop (a sync test, a blocked thread) is covered by ``faulthandler_timeout`` in the
pytest ini, which dumps every thread's stack.

The default is generous (``DEFAULT_S``, or the ini value ``async_timeout``: ``pytest -o
async_timeout=120`` when hunting a hang); a test that legitimately needs more says so with
``@pytest.mark.async_timeout(seconds)``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

DEFAULT_S = 300.0
CANCEL_GRACE_S = 30.0  # how long a timed-out test gets to run its ``finally`` blocks


def limit_of(item: pytest.Item) -> float:
    """The item's bound: its ``async_timeout`` marker, else the ini's ``async_timeout``."""
    marker = item.get_closest_marker("async_timeout")
    if marker is None:
        return float(item.config.getini("async_timeout") or DEFAULT_S)
    seconds = marker.args[0] if marker.args else marker.kwargs.get("seconds")
    if not isinstance(seconds, int | float) or seconds <= 0:
        raise pytest.UsageError(f"{item.nodeid}: async_timeout needs a positive number of seconds")
    return float(seconds)


def await_chain(obj: Any) -> list[str]:
    """The frames of a coroutine down its ``await`` chain, then what the innermost one waits on
    (``Task.print_stack`` shows only the outermost frame of a suspended coroutine)."""
    lines: list[str] = []
    for _ in range(100):  # a chain is never this deep; a cycle must not hang the dump itself
        frame = (
            getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)
        )
        if frame is None:
            if obj is not None:
                lines.append(f"    waiting on {obj!r}")
            break
        lines.append(f'  File "{frame.f_code.co_filename}", line {frame.f_lineno}, in {frame.f_code.co_name}')
        obj = (
            getattr(obj, "cr_await", None)
            or getattr(obj, "gi_yieldfrom", None)
            or getattr(obj, "ag_await", None)
        )
    return lines


def task_dump() -> str:
    """Every task of the running loop (but the caller) with its whole await chain."""
    me = asyncio.current_task()  # the watchdog itself: its stack is pytest's, not the test's
    tasks = sorted((t for t in asyncio.all_tasks() if t is not me), key=lambda t: t.get_name())
    lines = [f"{len(tasks)} asyncio task(s):"]
    for task in tasks:
        lines.append(f"--- task {task.get_name()!r}")
        lines.extend(await_chain(task.get_coro()))
    return "\n".join(lines) + "\n"


def bounded(
    fn: Callable[..., Coroutine[Any, Any, Any]], limit_s: float, nodeid: str
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``fn`` (an async test function) failing with a task dump once it runs over ``limit_s``."""

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        test = asyncio.ensure_future(fn(*args, **kwargs))
        started = time.monotonic()
        done, _ = await asyncio.wait({test}, timeout=limit_s)
        if done:
            return test.result()
        dump = task_dump()
        test.cancel()
        done, _ = await asyncio.wait({test}, timeout=CANCEL_GRACE_S)
        after = "" if done else f"; it did not finish within {CANCEL_GRACE_S:g} s of its cancellation either"
        pytest.fail(
            f"{nodeid} did not finish within {limit_s:g} s (async_timeout; ran "
            f"{time.monotonic() - started:.0f} s{after}). Tasks when it timed out:\n{dump}",
            pytrace=False,
        )

    return run
