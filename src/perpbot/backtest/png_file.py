"""PNG files of the report's charts, encoded from the RGBA pixels matplotlib drew.

Why not Pillow's encoder (issue 13, the charts after the run): at zlib level 1 Pillow spent
~25-30 ms per 1200x800 chart, and most of it is not zlib (its level 0 still took ~22 ms) but
its adaptive filtering, which tries all five PNG row filters on every row to keep the best.
On these charts (flat background, thin lines, text) one filter for every row, "Up" (each byte
minus the one above it: one numpy subtraction for the whole image), compresses as well or
better: ~10 ms per chart, files ~1-3 % smaller than Pillow's at the same level.

What is written is what matplotlib's own PNG has: 8-bit RGBA (colour type 6), the same
``Software`` text and the physical pixel size (pHYs) from the figure's dpi; one IDAT chunk.
The pixels are the buffer matplotlib drew, unchanged (PNG is lossless; tested against
Pillow's decoding of matplotlib's own PNG).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UP = 2  # PNG filter type "Up": Filt(x) = Orig(x) - Orig(b), b the byte above (0 on the first row)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def up_filtered(rgba: np.ndarray) -> np.ndarray:
    """The image's scanlines as PNG stores them: per row, the filter byte ``Up`` then the row
    minus the row above (modulo 256: uint8 arithmetic wraps exactly as the format says)."""
    h = rgba.shape[0]
    rows = rgba.reshape(h, -1)
    out = np.empty((h, rows.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = _UP
    out[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    return out


def encode_png(rgba: np.ndarray, dpi: float, text: dict[str, str], level: int = 1) -> bytes:
    """An RGBA image (``height x width x 4``, uint8) as PNG bytes, with ``text`` as ``tEXt``
    chunks (Latin-1) and ``dpi`` as its physical pixel size; ``level`` is zlib's."""
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"need height x width x 4 uint8 pixels, got {rgba.shape} {rgba.dtype}")
    h, w = rgba.shape[:2]
    ppm = round(dpi / 0.0254)  # pixels per metre, as Pillow writes a dpi
    parts = [
        SIGNATURE,
        _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)),
        *(_chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1")) for k, v in text.items()),
        _chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1)),
        _chunk(b"IDAT", zlib.compress(up_filtered(np.ascontiguousarray(rgba)), level)),
        _chunk(b"IEND", b""),
    ]
    return b"".join(parts)
