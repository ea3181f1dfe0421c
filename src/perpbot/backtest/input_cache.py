"""A derived, validated on-disk cache of a market file's arrays and its feature arrays.

Why (issue 13: a backtest's first candle within 0.4 s): before its first candle a backtest spent
~0.35 s CPU importing pyarrow, decoding three parquet files and computing the features, the same
work on the same bytes every run. This cache keeps the result of that work per data file: the
validated market arrays (what ``market_arrays.load_market_arrays`` returns), the file's synthetic
marker, and the feature arrays for one set of rule parameters. A hit maps one file
(``array_file``) and reads only the pages the run touches.

Never stale: an entry is used only when all of this matches what it was made from, checked on
every read (not only through the file name):

* the data file: its size, modification time, inode and the SHA-256 of its bytes (hashed on
  every run, ~2 ms for a year of candles, so a file rewritten with the same size and time is
  still caught);
* the code: the SHA-256 of the source of every module whose code decides the cached values
  (:data:`CODE_FILES`), numpy's version and the TA-Lib extension's size and time, plus
  :data:`FORMAT`;
* for the features, the rule parameters they were computed with (others recompute them).

Anything else (an unreadable, truncated or foreign file, a cache folder that cannot be written)
is a miss: the inputs are computed as without a cache, and the run never fails because of it.
One entry per data file (the file name is a hash of its resolved path), replaced atomically
when the data, the code or the parameters change, so the folder does not grow with reruns; at
most :data:`MAX_ENTRIES` entries are kept, the least recently used go first.

Where: ``$PERPBOT_CACHE_DIR``, else ``$XDG_CACHE_HOME/perpbot/inputs``, else
``~/.cache/perpbot/inputs``; ``PERPBOT_CACHE_DIR=off`` turns the cache off. Deleting the folder
is always safe.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perpbot.backtest.array_file import read_arrays, read_meta, write_arrays
from perpbot.data.market_arrays import MarketArrays

log = logging.getLogger(__name__)

FORMAT = 1
MAX_ENTRIES = 64  # data files (a few tens of MiB each for a year); least recently used go first
CACHE_ENV = "PERPBOT_CACHE_DIR"
_OFF = frozenset({"", "0", "off", "no", "none", "false"})
_PKG = Path(__file__).resolve().parents[1]
# Every module whose code decides a cached value: loading and validating a market, the features
# and the rule signal, and this file (its layout).
CODE_FILES = (
    "backtest/array_file.py",
    "backtest/input_cache.py",
    "data/market_arrays.py",
    "data/schema.py",
    "data/store.py",
    "ml/features.py",
    "strategy/indicators.py",
    "strategy/signal.py",
)


def cache_root(environ: Mapping[str, str] | None = None) -> Path | None:
    """The cache folder (module docstring), or None when the cache is off (or the code's sources
    cannot be read to key it)."""
    env = os.environ if environ is None else environ
    if code_version() is None:
        return None
    raw = env.get(CACHE_ENV)
    if raw is not None:
        return None if raw.strip().lower() in _OFF else Path(raw)
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "perpbot" / "inputs"


@functools.cache
def code_version() -> str | None:
    """SHA-256 over :data:`CODE_FILES`, numpy's version, the TA-Lib extension and :data:`FORMAT`;
    None when a source file cannot be read (an install without sources): then no cache."""
    import importlib.util

    h = hashlib.sha256(f"format {FORMAT} numpy {np.__version__}".encode())
    for rel in CODE_FILES:
        try:
            h.update(rel.encode() + b"\0" + (_PKG / rel).read_bytes() + b"\0")
        except OSError:
            return None
    spec = importlib.util.find_spec("talib")  # located, not imported
    if spec is not None and spec.submodule_search_locations:
        for ext in sorted(Path(next(iter(spec.submodule_search_locations))).glob("_ta_lib*")):
            st = ext.stat()
            h.update(f"{ext.name} {st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Source:
    """What a data file is now: identity and content."""

    path: str  # resolved
    size: int
    mtime_ns: int
    inode: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "inode": self.inode,
            "sha256": self.sha256,
        }


_described: dict[str, tuple[tuple[int, ...], Source]] = {}


def describe(path: Path) -> Source | None:
    """The file's :class:`Source`, or None when it cannot be read (the loader reports why).

    Within one process a file whose size, times (the status-change time included, which every
    write moves and ``utime`` cannot set back) and inode are unchanged is not hashed again: a
    backtest asks twice (the synthetic-data note, then the load)."""
    try:
        resolved = path.resolve()
        st = os.stat(resolved)
        stamp = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        known = _described.get(str(resolved))
        if known is not None and known[0] == stamp:
            return known[1]
        with open(resolved, "rb") as fh:
            st = os.fstat(fh.fileno())
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
    source = Source(str(resolved), st.st_size, st.st_mtime_ns, st.st_ino, digest)
    _described[str(resolved)] = ((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev), source)
    return source


@dataclass(frozen=True, slots=True)
class Entry:
    """One data file's cached inputs; ``features`` is None when stored for other parameters."""

    market: MarketArrays
    synthetic: str | None
    features: dict[str, np.ndarray] | None


def entry_path(root: Path, source: Source) -> Path:
    return root / f"{hashlib.sha256(source.path.encode()).hexdigest()[:24]}.arrays"


def _meta(
    source: Source, market: MarketArrays, synthetic: str | None, params: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "code": code_version(),
        "source": source.as_dict(),
        "funding_convention": market.funding_convention,
        "synthetic": synthetic,
        "params": dict(params),
    }


def _valid(meta: Mapping[str, Any], source: Source) -> bool:
    return (
        meta.get("format") == FORMAT
        and meta.get("code") == code_version()
        and meta.get("source") == source.as_dict()
    )


def read(root: Path, source: Source, params: Mapping[str, Any] | None) -> Entry | None:
    """The entry for ``source`` when it is valid for it (module docstring), else None; its
    features only when they were computed with ``params``. Arrays are read-only views of the
    mapped file (``array_file``)."""
    file = entry_path(root, source)
    try:
        meta, arrays = read_arrays(file)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # BadArrayFile is a ValueError
        log.debug("input cache: %s unreadable (%s); recomputing", file, exc)
        return None
    if not _valid(meta, source):
        return None
    times = arrays.get("t")
    columns = {k[2:]: v for k, v in arrays.items() if k.startswith("m:")}
    same = meta.get("params") == dict(params or {}) and params is not None
    features = {k[2:]: v for k, v in arrays.items() if k.startswith("f:")} if same else None
    if times is None or times.dtype != np.int64 or not columns:
        return None
    if any(a.shape != times.shape for a in (*columns.values(), *(features or {}).values())):
        return None
    with contextlib.suppress(OSError):
        os.utime(file)  # recently used: kept by ``prune``
    market = MarketArrays(times, columns, meta.get("funding_convention"))
    return Entry(market, meta.get("synthetic"), features)


def synthetic_marker(root: Path, source: Source) -> tuple[bool, str | None]:
    """(found, the file's synthetic marker) from a valid entry, reading its header only."""
    try:
        meta = read_meta(entry_path(root, source))
    except (OSError, ValueError, KeyError, TypeError):
        return False, None
    return (True, meta.get("synthetic")) if _valid(meta, source) else (False, None)


def cached_synthetic_origin(path: Path) -> str | None:
    """``store.synthetic_origin(path)``, from the input cache when it holds a valid entry for the
    file (no pyarrow), else from the parquet footer."""
    root = cache_root()
    source = None if root is None else describe(path)
    if root is not None and source is not None:
        found, marker = synthetic_marker(root, source)
        if found:
            return marker
    from perpbot.data.store import synthetic_origin

    return synthetic_origin(path)


def prune(root: Path, keep: int = MAX_ENTRIES) -> None:
    """Keep the ``keep`` most recently used entries (data files come and go: temporary folders,
    renamed symbols); leftovers of interrupted writes go too."""
    try:
        files = [(f.stat().st_mtime_ns, f) for f in root.iterdir() if f.name.endswith((".arrays", ".tmp"))]
    except OSError:
        return
    entries = sorted((x for x in files if x[1].suffix == ".arrays"), reverse=True)
    stale = [f for _, f in entries[keep:]]
    stale += [f for m, f in files if f.suffix == ".tmp" and m < time.time_ns() - 3600 * 10**9]
    for f in stale:
        with contextlib.suppress(OSError):
            f.unlink()


def write(
    root: Path,
    source: Source,
    market: MarketArrays,
    synthetic: str | None,
    params: Mapping[str, Any],
    features: Mapping[str, np.ndarray],
) -> bool:
    """Store (atomically replace) the entry for ``source``; False when the folder is unusable or
    the file changed while it was being read (then nothing is stored)."""
    now = describe(Path(source.path))
    if now != source:
        return False
    meta = _meta(source, market, synthetic, params)
    arrays: dict[str, np.ndarray] = {}
    arrays["t"] = np.ascontiguousarray(market.open_time_ms, dtype=np.int64)
    arrays.update({f"m:{k}": v for k, v in market.columns.items()})
    arrays.update({f"f:{k}": np.asarray(v) for k, v in features.items()})
    tmp: str | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".entry-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            write_arrays(fh, meta, arrays)
        os.replace(tmp, entry_path(root, source))
        tmp = None
        prune(root)
    except OSError as exc:
        log.debug("input cache: cannot write into %s (%s)", root, exc)
        return False
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return True
