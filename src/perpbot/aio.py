"""Stopping a task for sure, on Python 3.11.

Why: ``task.cancel(); await task`` can wait forever on 3.11. ``asyncio.wait_for`` there swallows
a cancellation that arrives in the same loop turn as its inner awaitable's result (CPython
gh-86296, fixed in 3.12 by the ``asyncio.timeout`` rewrite): the task goes on as if nothing was
asked. The runtime's WebSocket task does exactly that when it is stopped while ``ws_connect`` (in
a ``wait_for``) completes; it then connects and reads, and the stop waited on it forever (the
whole-suite hang of brief h15hang). Cancelling again until the task is done, within a bound,
stops such a task at its next await; a task that still runs after the bound is reported, not
waited for.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

RECANCEL_S = 0.5  # how often a lost cancellation is repeated
STOP_WAIT_S = 10.0  # how long a stop waits for a cancelled background task by default


async def cancel_and_wait(task: asyncio.Task[object] | asyncio.Future[object], timeout_s: float) -> bool:
    """Cancel ``task`` (again every ``RECANCEL_S`` while it runs) and wait at most ``timeout_s``
    for it to end. True when it ended; False (logged) when it is still running after the bound.
    The task's own outcome (result, exception, cancellation) is retrieved and dropped: a stop
    does not re-raise what a stopped task died of (it was logged where it happened)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    cancels = 0
    while not task.done():
        task.cancel()
        cancels += 1
        left = deadline - loop.time()
        if left <= 0:
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            log.error("task %s did not end within %g s of its cancellation", name, timeout_s)
            return False
        await asyncio.wait({task}, timeout=min(RECANCEL_S, left))
    if cancels > 1:
        name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
        log.warning(
            "task %s ended after %d cancellations (a lost cancellation, CPython gh-86296)", name, cancels
        )
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" at garbage collection
    return True
