"""A ``perpbot simulate`` child process on a free loopback port, for the runtime tests."""

from __future__ import annotations

from perpbot.simulator.child import SimulatorChild


class Simulator(SimulatorChild):
    """Started at construction with the given symbols and replay days (``--speed 0``)."""

    def __init__(self, symbols: list[str], days: int = 3, *extra: str) -> None:
        super().__init__(["--symbols", ",".join(symbols), "--days", str(days), *extra])
        self.start()
