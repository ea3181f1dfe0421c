"""A ``perpbot simulate`` child process on a free loopback port, for the runtime tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

PERPBOT = str(Path(sys.executable).with_name("perpbot"))
LISTENING = re.compile(r"listening on http://([0-9.]+):(\d+)")


class Simulator:
    def __init__(self, symbols: list[str], days: int = 3, *extra: str) -> None:
        cmd = [PERPBOT, "simulate", "--symbols", ",".join(symbols), "--days", str(days)]
        cmd += ["--port", "0", "--speed", "0", *extra]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = LISTENING.search(line)
        if m is None:
            err = self.stop()
            raise RuntimeError(f"perpbot simulate did not start: {line!r} {err[-500:]!r}")
        self.port = int(m.group(2))

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        from perpbot.simulator.config import DEFAULT_API_KEY, DEFAULT_API_SECRET

        return {
            "BINANCE_ENV": "custom",
            "BINANCE_FAPI_URL": self.http,
            "BINANCE_WS_URL": self.ws,
            "BINANCE_API_KEY": DEFAULT_API_KEY,
            "BINANCE_API_SECRET": DEFAULT_API_SECRET,
        }

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.http + path, method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def advance(self, bars: int = 1) -> Any:
        return self._call("POST", f"/sim/advance?bars={bars}")

    def state(self) -> Any:
        return self._call("GET", "/sim/state")

    def stop(self) -> str:
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
