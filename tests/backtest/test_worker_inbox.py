"""The chart worker's inbox before the batch: candles sent ahead are kept, the batch ends the wait."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from perpbot.backtest import array_file
from perpbot.backtest.candle_bars import PNG_CANDLES, Candles, aggregate
from perpbot.backtest.chart_pool import send
from perpbot.backtest.worker_inbox import Inbox, decode_candles, encode_candles, fits_in_pipe


def _candles(n: int, seed: int) -> Candles:
    rng = np.random.default_rng(seed)
    close = 1 + np.cumsum(rng.normal(0, 0.01, n))
    t = 1_700_000_000_000 + 900_000 * np.arange(n, dtype=np.int64)
    return Candles(t, np.roll(close, 1), close + 0.02, close - 0.02, close)


def _same(a: Candles, b: Candles) -> bool:
    fields = ("open_time_ms", "open", "high", "low", "close")
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields)


def test_candles_travel_merged_as_the_png_draws_them_in_symbol_order() -> None:
    sent = {"XRPUSDT": _candles(35_000, 1), "TRXUSDT": _candles(500, 2)}
    got = decode_candles(encode_candles(sent))
    assert list(got) == ["XRPUSDT", "TRXUSDT"]
    for sym, c in sent.items():
        assert _same(got[sym], aggregate(c, PNG_CANDLES))
    assert got["XRPUSDT"].open_time_ms.size <= PNG_CANDLES and got["TRXUSDT"].open_time_ms.size == 500


def test_other_bytes_are_not_taken_for_candles() -> None:
    with pytest.raises(array_file.BadArrayFile, match="not candles"):
        decode_candles(array_file.dumps({"kind": "trades_png"}, {}))


def test_the_inbox_keeps_candles_and_stops_at_the_batch() -> None:
    r, w = os.pipe()
    try:
        inbox = Inbox(r)
        assert not inbox.jobs_waiting()  # nothing yet
        send(w, encode_candles({"XRPUSDT": _candles(50, 3)}))
        assert not inbox.jobs_waiting() and list(inbox.candles[0]) == ["XRPUSDT"]
        send(w, b"8")
        send(w, b"the first job: left in the pipe for the worker to read")
        assert inbox.jobs_waiting() and inbox.head == b"8"
        assert inbox.jobs_waiting()  # reads nothing more
        inbox.wait()  # returns at once: the batch is here
        assert inbox.head == b"8"
    finally:
        os.close(r)
        os.close(w)


def test_a_parent_gone_ends_the_wait() -> None:
    r, w = os.pipe()
    os.close(w)
    try:
        inbox = Inbox(r)
        assert inbox.jobs_waiting() and inbox.closed and inbox.head is None
    finally:
        os.close(r)


@pytest.mark.skipif(sys.platform != "linux", reason="F_SETPIPE_SZ is Linux's")
def test_a_pipe_grows_to_take_the_candles_without_blocking_the_run() -> None:
    r, w = os.pipe()
    try:
        n = 200_000  # three symbols' merged candles are ~140 kB; a pipe holds 64 kB at first
        assert fits_in_pipe(w, n)
        os.set_blocking(w, False)
        written = 0
        while written < n:  # a full pipe would raise BlockingIOError instead of waiting
            written += os.write(w, b"x" * (n - written))
        assert not fits_in_pipe(w, 1 << 40)  # beyond what any system allows: not sent at all
    finally:
        os.close(r)
        os.close(w)
