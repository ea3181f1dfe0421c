"""``perpbot simulate`` as a child process on a free loopback port.

Why a child process and not the server class in process: paper trading and the contract tests
must reach the simulator exactly as they would reach Binance, over real sockets of another
process, so nothing in the client can lean on shared memory or the simulator's event loop. The
child's one stdout line (``perpbot simulate listening on http://HOST:PORT ...``) is its readiness
signal; SIGTERM stops it cleanly (exit 0).

``spawn()`` and ``wait_ready()`` are separate so a caller can start the next simulator while it
still uses the current one (the contract tests' pool).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from perpbot.errors import ConfigError

LISTENING = re.compile(r"listening on http://([0-9.]+):(\d+)")


def perpbot_executable() -> str:
    """The ``perpbot`` script installed beside the running interpreter."""
    return str(Path(sys.executable).with_name("perpbot"))


class SimulatorChild:
    """One ``perpbot simulate --port 0 ARGS`` process (``--speed 0`` unless ARGS set a speed)."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def spawn(self) -> SimulatorChild:
        cmd = [perpbot_executable(), "simulate", "--port", "0", *self.args]
        if "--speed" not in self.args:
            cmd += ["--speed", "0"]
        env = {**os.environ, **self.extra_env}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        return self

    def wait_ready(self) -> SimulatorChild:
        """Block until the ``listening on`` line; a child that exits instead is one clear error
        naming the simulator's own last error line."""
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = LISTENING.search(line)
        if m is None:
            err = self.stop()
            last = [x for x in err.splitlines() if x.strip()][-1:] or [line.strip() or "no output"]
            raise ConfigError(f"perpbot simulate did not start: {last[0].removeprefix('error: ')}")
        self.port = int(m.group(2))
        return self

    def start(self) -> SimulatorChild:
        return self.spawn().wait_ready()

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The settings that point perpbot's live adapter at this simulator."""
        from perpbot.simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET

        return {
            "BINANCE_ENV": "custom",
            "BINANCE_FAPI_URL": self.http,
            "BINANCE_WS_URL": self.ws,
            "BINANCE_API_KEY": DEFAULT_API_KEY,
            "BINANCE_API_SECRET": DEFAULT_API_SECRET,
        }

    def call(self, method: str, path: str, timeout: float = 60.0) -> Any:
        """One control request (``/sim/state``, ``/sim/advance``) answered as JSON."""
        req = urllib.request.Request(self.http + path, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def advance(self, bars: int = 1, close_gap_ms: int = 0) -> Any:
        """``close_gap_ms``: each candle's closes that long after its fills (``Replay.advance_async``)."""
        gap = f"&close_gap_ms={close_gap_ms}" if close_gap_ms else ""
        return self.call("POST", f"/sim/advance?bars={bars}{gap}")

    def state(self) -> Any:
        return self.call("GET", "/sim/state")

    def terminate(self) -> None:
        """SIGTERM without waiting (``stop`` collects the exit)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> str:
        """Stop (SIGTERM, then SIGKILL after 10 s) and return what the child wrote on stderr."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        return err
