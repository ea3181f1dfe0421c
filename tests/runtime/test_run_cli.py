"""``perpbot run`` as the operator runs it: a real process against ``perpbot simulate``."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from perpbot.runtime.guard import JournalLock
from tests.runtime.simproc import Simulator

PERPBOT = str(Path(sys.executable).with_name("perpbot"))
MAIN = str(Path(__file__).resolve().parents[2] / "main.py")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    s = Simulator(["XRPUSDT", "BTCUSDT", "ETHUSDT"], 2)
    yield s
    s.stop()


def _env(sim: Simulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE", "PERPBOT", "SYMBOL"))}
    return {**env, **sim.env(), "SYMBOLS": "XRPUSDT", **extra}


def _start(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def _read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 60.0) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if needle in line:
                return lines
    raise AssertionError(f"{needle!r} not seen; got {lines!r}")


def test_run_starts_prints_its_plan_refuses_a_second_run_and_stops_on_sigterm(
    sim: Simulator, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.sqlite3"
    cmd = [
        PERPBOT,
        "run",
        "--journal",
        str(journal),
        "--no-ml",
        "--heartbeat",
        "1",
        "--connect-attempts",
        "2",
    ]
    first = _start(cmd, _env(sim), tmp_path)
    try:
        lines = _read_until(first, "heartbeat custom")
        plan = [
            i for i, line in enumerate(lines) if line.startswith("perpbot custom: XRPUSDT on Binance custom")
        ]
        assert plan and "(correlation BTCUSDT/ETHUSDT)" in lines[plan[0]]
        assert any("limits: 3 positions" in line for line in lines)
        second = subprocess.run(
            [sys.executable, MAIN, "--journal", str(journal), "--no-ml"],
            env=_env(sim),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and "journal in use by pid" in second.stderr
        assert "Traceback" not in second.stderr
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=30)
        assert first.returncode == 0, err[-2000:]
        assert "stopped (protective orders stay on the exchange)" in out
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert sim.state()["fill_count"] == 0  # nothing traded: the replay did not move


@pytest.mark.parametrize(
    ("extra_env", "args", "message"),
    [
        ({"BINANCE_ENV": "live"}, [], "BINANCE_ENV=live trades real money"),
        ({"BINANCE_ENV": "live"}, ["--live"], "--live without confirmation"),
        ({"BINANCE_API_KEY": ""}, [], "BINANCE_API_KEY is empty"),
        ({"SYMBOLS": "DOGEUSDT"}, [], "DOGEUSDT"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_sends_nothing(
    sim: Simulator, tmp_path: Path, extra_env: dict[str, str], args: list[str], message: str
) -> None:
    r = subprocess.run(
        [
            PERPBOT,
            "run",
            "--journal",
            str(tmp_path / "j.sqlite3"),
            "--no-ml",
            "--connect-attempts",
            "1",
            *args,
        ],
        env=_env(sim, **extra_env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert sim.state()["fill_count"] == 0


def test_sigterm_stops_a_run_that_is_still_waiting_for_an_unreachable_venue(tmp_path: Path) -> None:
    """Start-up retries an unreachable venue forever (a restart must not give up), but SIGTERM
    or Ctrl-C must still stop it: nothing was sent, there is nothing to finish. The signal was
    swallowed (the stop event is only awaited once start-up is done): only SIGKILL ended it."""
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE", "PERPBOT", "SYMBOL"))}
    env.update(
        BINANCE_ENV="custom",
        BINANCE_FAPI_URL=f"http://127.0.0.1:{port}",
        BINANCE_WS_URL=f"ws://127.0.0.1:{port}",
        BINANCE_API_KEY="k" * 16,
        BINANCE_API_SECRET="s" * 16,
        SYMBOLS="XRPUSDT",
    )
    cmd = [PERPBOT, "run", "--journal", str(tmp_path / "j.sqlite3"), "--no-ml", "--quiet"]
    proc = _start(cmd, env, tmp_path)
    try:
        _read_until(proc, "unreachable (attempt 2")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err[-2000:]
        assert "stopped" in out and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    JournalLock(tmp_path / "j.sqlite3").acquire().release()  # the lock is free again
