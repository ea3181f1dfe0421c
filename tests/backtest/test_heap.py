"""backtest.heap: freed heap pages pinned under a live allocation go back to the OS."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from perpbot.backtest.heap import release_free_heap

# In a fresh interpreter: 48 MiB of 64 KiB blocks (below glibc's mmap threshold, so in the heap),
# one block allocated after them pins the heap's top, then the 48 MiB are freed. RSS (MiB) is
# printed after the free and after ``release_free_heap``.
_CHILD = """
from perpbot.backtest.heap import release_free_heap

def rss():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))

blocks = [bytearray(b"x" * 65536) for _ in range(768)]
pin = bytearray(b"x" * 65536)
del blocks
before = rss()
released = release_free_heap()
print(released, before, rss())
"""


GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_release_reports_whether_the_c_library_can() -> None:
    assert release_free_heap() is GLIBC


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc_trim")
def test_freed_pages_under_a_live_block_leave_the_rss() -> None:
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True)
    released, before, after = out.stdout.split()
    assert released == "True"
    assert float(before) - float(after) > 40  # of the 48 MiB freed, pinned until released
