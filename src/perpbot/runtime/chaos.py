"""The chaos run (issue 10 §4): a paper replay under injected faults and SIGKILLs, then checks.

Three processes, so that killing the bot proves something: this harness, a ``perpbot simulate``
child (the exchange; it survives every kill and keeps the audit), and the bot process
(``python -m perpbot.runtime.chaos_bot``: the paper runtime attached to the simulator). The
harness watches replay time through ``/sim/state`` and, at seeded random candles,
- injects a fault (``POST /sim/faults``) from ``chaos_plan.fault_plan`` (every shape of
  ``FAULTS`` once in the first part of the run, then seeded random picks); a fault marked to
  wait for a position is held back until one is open;
- kills the bot with SIGKILL after a seeded random wall delay (so the kill lands anywhere in
  the handling of a candle), then starts a new bot process on the same journal;
- plays the operator of a tripped kill switch: once a symbol's switch has been tripped for
  ``ks_reset_candles`` candles, it runs ``perpbot kill-switch reset``'s code on the journal
  (``ops_journal.reset_kill_switch``) while the bot runs, which the bot takes at its next
  candle of that symbol. The switch is not weakened: each [trip, reset) span is handed to
  ``chaos_check.check_risk``, which finds any entry made inside it.
When the replay is finished and a bot has exited 0, the checks of ``chaos_check`` run on the
simulator's audit, its fault log, the journal and the bots' logs. ``bench/chaos.py`` and
``tests/chaos`` both call ``run_chaos``.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perpbot.config import MAX_DAILY_LOSS, MAX_POSITIONS, load_config
from perpbot.runtime import chaos_check as cc
from perpbot.runtime.chaos_plan import (
    BAR_MS,
    CORRELATION,
    FAULTS,
    LOOSE,
    SYMBOLS,
    fault_plan,
    lead_candles,
    needs_position,
    schedule,
    wire,
)
from perpbot.runtime.ops_journal import reset_kill_switch
from perpbot.simulator.child import SimulatorChild
from perpbot.simulator.weights import WEIGHT_LIMIT

__all__ = ["FAULTS", "ChaosResult", "ChaosSettings", "run_chaos"]


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    days: int
    seed: int
    out: Path
    kills: int = 3
    faults_per_day: float = 3.0
    symbols: tuple[str, ...] = SYMBOLS
    balance: float = 1000.0
    env: dict[str, str] = field(default_factory=lambda: dict(LOOSE))
    break_mode: str | None = None  # test-only sabotage of the bot (chaos_bot.BREAK_ENV)
    # Binance's limit, counted on both sides per minute of replay time paced by the wall clock
    # (``perpbot simulate --replay-limits``, ``weights.PacedReplayClock``), as ``perpbot paper``
    # does: each candle's requests fall into that candle's replay minute, as they do live. Counted
    # per wall minute instead, a replay packing hours into a minute was paced by the weight
    # budget (a 30-day run spent half its wall time waiting for the next wall minute, and the
    # market stream's watchdog fired in each wait). 429s are exercised by ``rate_limit_burst``.
    weight_limit: int = WEIGHT_LIMIT
    # Fills split into executions of at most this quantity: partial fills on every order.
    max_fill_qty: float = 400.0
    max_wall_s: float = 3600.0
    poll_s: float = 0.05
    # The operator resets a kill switch that has been tripped this many candles (0: never, the
    # switch latches to the end as it would without an operator).
    ks_reset_candles: int = 96


@dataclass(slots=True)
class ChaosResult:
    violations: list[str]
    evidence: cc.EvidenceReport
    kills: int
    incarnations: list[cc.Incarnation]
    faults: list[dict[str, Any]]
    trades: int
    fills: int
    candles: int
    max_gap_ms: int
    wall_s: float
    net_pnl: float
    audit: dict[str, Any]
    trips: list[cc.Trip] = field(default_factory=list)

    def summary(self) -> list[str]:
        hit = sorted({f["kind"] for f in self.faults if f.get("hits")})
        return [
            f"candles {self.candles}, wall {self.wall_s:.1f} s "
            f"({self.candles / max(self.wall_s, 1e-9):.1f} candles/s)",
            f"bot processes {len(self.incarnations)}, SIGKILLs {self.kills}, kill-switch trips "
            f"{len(self.trips)} ({sum(t.reset_ms is not None for t in self.trips)} reset by the operator)",
            f"faults injected {len(self.faults)}, hit {sum(1 for f in self.faults if f.get('hits'))} "
            f"({len(hit)} kinds: {', '.join(hit)})",
            f"fault evidence: seen {len(self.evidence.seen)}, nothing to see {len(self.evidence.silent_ok)}, "
            f"lost with a killed process {len(self.evidence.excused)}, not hit {len(self.evidence.not_hit)}",
            f"executions {self.fills}, journal trades {self.trades}, net PnL {self.net_pnl:.4f} USDT",
            f"longest unprotected span {self.max_gap_ms / 1000:.1f} s of replay time",
            f"violations {len(self.violations)}",
        ]


class StatePoll:
    """The harness's many-times-a-second look at the venue: ``GET /sim/state?brief=1`` (no fault
    log or order books, which grow with the run) on one kept-alive connection (a new connection
    per poll cost the simulator an accept and a protocol set-up each time)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._conn: http.client.HTTPConnection | None = None

    def __call__(self) -> Any:
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self._conn.request("GET", "/sim/state?brief=1")
                r = self._conn.getresponse()
                body = r.read()
                if r.status != 200:
                    raise RuntimeError(f"GET /sim/state: HTTP {r.status}: {body[:200]!r}")
                return json.loads(body)
            except (http.client.HTTPException, OSError):
                self.close()  # the server closed an idle keep-alive: one fresh connection
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _post(sim: SimulatorChild, path: str, body: Any) -> Any:
    req = urllib.request.Request(
        sim.http + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


class BotProcess:
    """One ``chaos_bot`` incarnation; stderr goes to ``log``."""

    def __init__(self, n: int, sim: SimulatorChild, s: ChaosSettings, journal: Path) -> None:
        self.n = n
        self.log = s.out / f"bot-{n}.log"
        env = {**os.environ, **s.env}
        env.pop("PERPBOT_CHAOS_BREAK", None)
        if s.break_mode:
            env["PERPBOT_CHAOS_BREAK"] = s.break_mode
        cmd = [
            sys.executable,
            "-m",
            "perpbot.runtime.chaos_bot",
            "--port",
            str(sim.port),
            "--symbols",
            ",".join(s.symbols),
            "--journal",
            str(journal),
            "--weight-limit",
            str(s.weight_limit),
        ]
        self._err = self.log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._err, env=env)
        self.start_wall_ms = time.time_ns() // 1_000_000

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._err.close()

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


def tripped_switches(journal: Path) -> dict[str, int]:
    """Symbol → replay time of the trip, for every kill switch the journal shows tripped (read
    only, while a bot may be writing: the journal is SQLite in WAL mode)."""
    if not journal.exists():
        return {}
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=10.0)
    try:
        rows = db.execute("SELECT symbol, time_ms FROM kill_switch WHERE tripped = 1").fetchall()
    except sqlite3.OperationalError:  # no table yet (a journal being created)
        return {}
    finally:
        db.close()
    return {str(sym): int(ms) for sym, ms in rows}


class Operator:
    """Resets, as ``perpbot kill-switch reset`` does, every kill switch that has been tripped for
    ``after_ms`` of replay time, and keeps the [trip, reset) spans for the checks."""

    def __init__(self, journal: Path, after_ms: int) -> None:
        self.journal = journal
        self.after_ms = after_ms
        self.trips: list[cc.Trip] = []
        self._polled = 0.0

    def poll(self, now_ms: int, every_s: float = 0.5) -> None:
        """Reset the switches due at replay time ``now_ms`` (the journal is read every ``every_s``
        of wall time). The running bot takes a reset at its next candle of that symbol, so no
        entry of it can come before ``now_ms``: the recorded span never covers a legal entry."""
        if self.after_ms <= 0 or time.monotonic() - self._polled < every_s:
            return
        self._polled = time.monotonic()
        for sym, trip_ms in sorted(tripped_switches(self.journal).items()):
            if now_ms - trip_ms >= self.after_ms:
                reset_kill_switch(self.journal, sym, now_ms)
                self.trips.append(cc.Trip(sym, trip_ms, now_ms))

    def final(self) -> list[cc.Trip]:
        """Every span: the reset ones and those still tripped at the end."""
        still = [cc.Trip(sym, t, None) for sym, t in sorted(tripped_switches(self.journal).items())]
        return [*self.trips, *still]


def run_chaos(s: ChaosSettings) -> ChaosResult:
    s.out.mkdir(parents=True, exist_ok=True)
    journal = s.out / "journal.sqlite3"
    rng = random.Random(s.seed)
    t0 = time.monotonic()
    sim = SimulatorChild(
        [
            "--symbols",
            ",".join([*s.symbols, *CORRELATION]),
            "--days",
            str(s.days),
            "--balance",
            repr(s.balance),
            "--weight-limit",
            str(s.weight_limit),
            "--replay-limits",
            "--max-fill-qty",
            repr(s.max_fill_qty),
        ]
    ).start()
    bot: BotProcess | None = None
    operator = Operator(journal, s.ks_reset_candles * BAR_MS)
    poll = StatePoll(sim.port)
    try:
        st = poll()
        first_open = int(st["next_candle_open_ms"])
        candles = (int(st["end_ms"]) - first_open) // BAR_MS
        faults = fault_plan(rng, candles, s.faults_per_day)
        kills = [(k, rng.uniform(0.0, 1.5)) for k in schedule(rng, candles, s.kills, first=3)]
        deferred: list[dict[str, Any]] = []
        incarnations: list[cc.Incarnation] = []
        killed = 0
        while True:
            st = poll()
            now = int(st["replay_time_ms"])
            bot = BotProcess(len(incarnations) + 1, sim, s, journal)
            inc = cc.Incarnation(bot.n, bot.start_wall_ms, 0, False, now, float(st["balance"]))
            incarnations.append(inc)
            while bot.proc.poll() is None:
                if time.monotonic() - t0 > s.max_wall_s:
                    raise TimeoutError(f"chaos run over {s.max_wall_s:.0f} s of wall time")
                st = poll()
                done = (int(st["replay_time_ms"]) - first_open) // BAR_MS
                # Faults only reach a bot whose streams are up (a fault aimed at the dead
                # process's sockets or listen key would test nobody).
                conns = st["connections"]
                up = conns["market"] and conns["private"]
                while faults and faults[0][0] <= done and up:
                    due = faults.pop(0)[1]
                    if needs_position(due) and not st["positions"]:
                        deferred.append(due)  # armed once a position is open
                    elif candles - done >= lead_candles(due):  # else it could not play out
                        _post(sim, "/sim/faults", wire(due))
                while deferred and st["positions"] and up:
                    due = deferred.pop(0)
                    if candles - done >= lead_candles(due):
                        _post(sim, "/sim/faults", wire(due))
                if kills and kills[0][0] <= done and not st["finished"]:
                    time.sleep(kills.pop(0)[1])
                    bot.kill()
                    inc.killed = True
                    killed += 1
                    break
                operator.poll(int(st["replay_time_ms"]))
                time.sleep(s.poll_s)
            inc.end_wall_ms = time.time_ns() // 1_000_000
            rc = bot.proc.wait()
            bot.close()
            inc.lines = bot.lines()
            if not inc.killed:
                if rc != 0:
                    raise RuntimeError(f"chaos bot {bot.n} exited {rc}:\n{_tail(bot)}")
                if poll()["finished"]:
                    break
        audit = sim.call("GET", "/sim/audit")
        fault_log = list(sim.state()["faults"])
        (s.out / "audit.json").write_text(json.dumps(audit, indent=1))
        (s.out / "faults.json").write_text(json.dumps(fault_log, indent=1))
    finally:
        poll.close()
        if bot is not None:
            bot.close()
        sim.stop()
    trips = operator.final()
    return _check(s, audit, fault_log, journal, incarnations, killed, candles, time.monotonic() - t0, trips)


def _tail(bot: BotProcess) -> str:
    return "\n".join(bot.lines()[-20:])


def _check(
    s: ChaosSettings,
    audit: dict[str, Any],
    fault_log: list[dict[str, Any]],
    journal_path: Path,
    incarnations: list[cc.Incarnation],
    killed: int,
    candles: int,
    wall_s: float,
    trips: list[cc.Trip],
) -> ChaosResult:
    from perpbot.engine.journal import Journal

    cfg = load_config({**s.env, "SYMBOLS": ",".join(s.symbols)}, env_file=None)
    limits = cc.Limits(MAX_POSITIONS, cfg.max_same_direction, MAX_DAILY_LOSS)
    journal = Journal(journal_path)
    try:
        trades = journal.closed_trades()
        accounted = {sym: set(journal.accounted_keys(sym)) for sym in s.symbols}
    finally:
        journal.close()
    evidence = cc.check_fault_evidence(fault_log, incarnations)
    violations = [
        *cc.check_protection(audit),
        *cc.check_ledger(audit, trades, accounted, s.balance),
        *cc.check_risk(audit, trips, incarnations, limits, fault_log),
        *cc.check_client_ids(audit),
        *evidence.violations,
    ]
    gaps = [int(g["duration_ms"]) for g in audit["gaps"]]
    return ChaosResult(
        violations=violations,
        evidence=evidence,
        kills=killed,
        incarnations=incarnations,
        faults=fault_log,
        trades=len(trades),
        fills=len(audit["fills"]),
        candles=candles,
        max_gap_ms=max(gaps, default=0),
        wall_s=wall_s,
        net_pnl=sum(t.net_pnl for t in trades),
        audit=audit,
        trips=trips,
    )
