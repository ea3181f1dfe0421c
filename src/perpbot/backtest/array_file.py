"""One file of named numpy arrays plus a JSON header, read back as zero-copy memory-mapped views.

Why not ``.npz``: reading a zip member copies it through ``zipfile`` in small chunks (~30 ms per
symbol-year of inputs, issue 13: the first candle within 0.4 s), and every member is read whether
the caller uses it or not. Here the header says where each array lies; reading maps the file and
hands out read-only views, so only the pages a caller touches are ever read.

Layout: ``MAGIC`` (8 bytes), the header's length (8 bytes, little-endian), the header (UTF-8
JSON: ``meta`` as given, ``arrays`` as ``[name, dtype, offset, count]``, ``size`` of the data
area), then the data area (64-byte aligned) with each array's bytes at its 64-byte aligned
offset. A file whose length does not match its header (truncated, appended to) or whose header
does not parse is refused. ``dumps`` / ``loads`` are the same bytes in memory (the report's chart
jobs travel to the chart worker as such, ``chart_jobs``).
"""

from __future__ import annotations

import io
import json
import mmap
import os
import struct
from collections.abc import Mapping
from typing import IO, Any

import numpy as np

MAGIC = b"PBARRAY1"
_LEN = struct.Struct("<Q")
_ALIGN = 64


class BadArrayFile(ValueError):
    """Not a complete array file of this format."""


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def write_arrays(fh: IO[bytes], meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``meta`` and ``arrays`` (1-D, any fixed-size dtype) to the open binary file ``fh``."""
    blobs = [np.ascontiguousarray(a) for a in arrays.values()]
    table: list[list[Any]] = []
    offset = 0  # from the start of the data area, which follows the header (aligned)
    for name, blob in zip(arrays, blobs, strict=True):
        table.append([name, blob.dtype.str, offset, int(blob.size)])
        offset = _aligned(offset + blob.nbytes)
    header = json.dumps({"meta": dict(meta), "arrays": table, "size": offset}).encode()
    start = _aligned(len(MAGIC) + _LEN.size + len(header))
    fh.write(MAGIC + _LEN.pack(len(header)) + header)
    pos = len(MAGIC) + _LEN.size + len(header)
    for (_, _, off, _), blob in zip(table, blobs, strict=True):
        fh.write(b"\0" * (start + off - pos))
        fh.write(memoryview(blob).cast("B"))  # the array's own buffer, not a copy
        pos = start + off + blob.nbytes
    fh.write(b"\0" * (start + offset - pos))


def _header(fh: IO[bytes]) -> dict[str, Any]:
    head = fh.read(len(MAGIC) + _LEN.size)
    if len(head) != len(MAGIC) + _LEN.size or head[: len(MAGIC)] != MAGIC:
        raise BadArrayFile("not an array file")
    (n,) = _LEN.unpack(head[len(MAGIC) :])
    raw = fh.read(n)
    if len(raw) != n:
        raise BadArrayFile("truncated header")
    try:
        header = json.loads(raw)
    except ValueError:
        raise BadArrayFile("unreadable header") from None
    if not isinstance(header, dict) or not isinstance(header.get("meta"), dict):
        raise BadArrayFile("unreadable header")
    header["start"] = _aligned(len(MAGIC) + _LEN.size + n)
    return header


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta`` of an array file (its arrays are not read)."""
    with open(path, "rb") as fh:
        return dict(_header(fh)["meta"])


def read_arrays(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, name → read-only view) of an array file; ``BadArrayFile`` when incomplete or when
    its header does not describe arrays inside the file."""
    with open(path, "rb") as fh:
        header = _header(fh)
        size = os.fstat(fh.fileno()).st_size
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    return _views(header, mm, size)


def dumps(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """An array file's bytes (``write_arrays`` to memory): e.g. a message through a pipe."""
    buf = io.BytesIO()
    write_arrays(buf, meta, arrays)
    return buf.getvalue()


def loads(blob: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, name → read-only view into ``blob``) of ``dumps``'s bytes; ``BadArrayFile`` as
    ``read_arrays``."""
    return _views(_header(io.BytesIO(blob)), blob, len(blob))


def _views(header: dict[str, Any], buf: Any, size: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    data_size = header.get("size")
    if not isinstance(data_size, int) or header["start"] + data_size != size:
        raise BadArrayFile(f"{size} bytes, header says {header['start']} + {data_size!r}")
    arrays: dict[str, np.ndarray] = {}
    try:
        for name, dtype, offset, count in header["arrays"]:
            at = header["start"] + offset
            arrays[name] = np.frombuffer(buf, dtype=np.dtype(dtype), count=count, offset=at)
    except (KeyError, TypeError, ValueError) as exc:  # an object dtype too: numpy refuses it
        raise BadArrayFile(f"bad array table: {exc!r}") from None
    return dict(header["meta"]), arrays
