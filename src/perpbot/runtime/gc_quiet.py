"""The cyclic garbage collector kept out of a bar's decisions.

Why (issue 10, decision latency): CPython's cyclic collector runs whenever allocations pass a
threshold, wherever the loop happens to be. Counted in ``bench/bench_runtime.py`` (3 symbols,
300 bars, before this module): 559 young collections of ~0.1 ms, 51 middle ones of ~1 ms (up to
2.4 ms) and 4 full ones of 65-77 ms, over ~250,000 tracked objects, most of them start-up's
(modules, ccxt's markets, the preloaded bots). A collection that lands between a closed kline
and its entry order is added to that order's latency, and the decision allocates the most (frames,
requests, answers), so that is where the young ones tend to run.

Two measures, neither of which changes what is decided, only when cyclic garbage is reclaimed:

1. :func:`freeze_startup`: once the runtime has started (bots preloaded, venue connected), one
   full collection, then ``gc.freeze()``: what start-up left alive moves to the permanent
   generation, which later collections do not traverse. :func:`unfreeze` undoes it when the
   runtime closes, so a process that runs several runtimes (the tests, a restart) leaks nothing
   that outlived one.
2. :func:`hold`: from a candle job's start until its signal is known to be a HOLD, or until the
   decision's ``on_candle`` returned, automatic collection is off (counted over every job of the
   process: the collector is process-wide). The allocations of those milliseconds are collected
   by the first collection after the last holder let go, in the bookkeeping or the idle time
   between bars. Bounded: ``MAX_HOLD_S`` after it went off, collection comes back on even while
   a decision is stuck in retries, and a process that had disabled the collector itself is left
   as it was.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

# Far above a decision's round trips (~10 ms) and a 100-symbol burst (~0.4 s), far below a bar:
# a decision stuck in timeouts never keeps the collector off for long.
MAX_HOLD_S = 1.0


class _Hold:
    """The process's one count of holders (the collector is process-wide), kept per event loop:
    a holder of a loop that ended without letting go (its task never finished) is forgotten, and
    the collector switched back on, when a job of another loop first holds."""

    def __init__(self) -> None:
        self.holders = 0
        self.paused = False  # switched off by this module (never undoes anyone else's disable)
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def hold(self, max_hold_s: float) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            self.reset()
            self.loop = loop
        self.holders += 1
        if not self.paused and self.timer is None and gc.isenabled():
            gc.disable()
            self.paused = True
            self.timer = loop.call_later(max_hold_s, self.resume)
        released = False

        def release() -> None:
            nonlocal released
            if released or self.loop is not loop:
                return
            released = True
            self.holders = max(0, self.holders - 1)
            if not self.holders:
                self.resume()

        return release

    def resume(self) -> None:
        """Collection back on (the bound reached, or no holder left). The bound's timer stays
        spent while a holder is stuck, so collection stays on until every holder let go."""
        if self.paused:
            self.paused = False
            gc.enable()
        if not self.holders and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def reset(self) -> None:
        self.holders = 0
        self.resume()
        self.loop = None


_HOLD = _Hold()


def hold(max_hold_s: float = MAX_HOLD_S) -> Callable[[], None]:
    """Automatic collection off until the returned callable is called (once is enough; later
    calls do nothing), or ``max_hold_s`` at the latest. Call from the event loop's thread."""
    return _HOLD.hold(max_hold_s)


def holders() -> int:
    return _HOLD.holders


def freeze_startup() -> None:
    """Collect once, then move every object still alive to the permanent generation."""
    gc.collect()
    gc.freeze()


def unfreeze() -> None:
    """Back into the oldest generation (collectable again once garbage), and no hold left over."""
    _HOLD.reset()
    gc.unfreeze()
