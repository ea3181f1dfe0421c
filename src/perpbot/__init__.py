"""perpbot: multi-symbol Binance USDT-M perpetual futures bot with an ML entry filter.

Arrow's memory pool (set here, before anything imports pyarrow): perpbot reads each parquet file
once, copies the columns it needs into numpy arrays and drops the Arrow table, so no Arrow buffer
lives long. Arrow's default pool (mimalloc) keeps its arenas and threads after that first read:
~34 MiB of RSS for the rest of the process, measured in ``bench/bench_scale.py``'s children
(issue 13, memory per symbol). The system allocator returns them. An operator's own
``ARROW_DEFAULT_MEMORY_POOL`` wins (``setdefault``); pyarrow reads it once, when it loads.
"""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

__version__ = "0.1.0"
