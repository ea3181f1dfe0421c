"""The chaos run (issue 10 §4): a paper replay under injected faults and SIGKILLs, then checks.

Three processes, so that killing the bot proves something: this harness, a ``perpbot simulate``
child (the exchange; it survives every kill and keeps the audit), and the bot process
(``python -m perpbot.runtime.chaos_bot``: the paper runtime attached to the simulator). The
harness watches replay time through ``/sim/state`` and, at seeded random candles,
- injects a fault (``POST /sim/faults``), cycling through ``FAULTS`` (every kind the simulator
  has, each at least once per run, then seeded random picks);
- kills the bot with SIGKILL after a seeded random wall delay (so the kill lands anywhere in
  the handling of a candle), then starts a new bot process on the same journal.
When the replay is finished and a bot has exited 0, the checks of ``chaos_check`` run on the
simulator's audit, its fault log, the journal and the bots' logs. ``bench/chaos.py`` and
``tests/chaos`` both call ``run_chaos``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perpbot.config import MAX_DAILY_LOSS, MAX_POSITIONS, load_config
from perpbot.runtime import chaos_check as cc
from perpbot.simulator.child import SimulatorChild

BAR_MS = 15 * 60_000
SYMBOLS = ("XRPUSDT", "TRXUSDT", "DOGEUSDT")
CORRELATION = ("BTCUSDT", "ETHUSDT")
# Loose strategy parameters, so that the bots trade often (several trades a day per symbol).
LOOSE = {
    "SIGNAL_THRESHOLD": "2",
    "ADX_THRESHOLD": "0",
    "VOL_MULTIPLIER": "1.0",
    "ATR_SL_MULT": "1.5",
    "ATR_TP_MULT": "2.0",
}
# Every fault kind of the simulator (issue 8 §4), in the shapes the bot must survive.
FAULTS: tuple[dict[str, Any], ...] = (
    {"kind": "http_error", "status": 502, "count": 2},  # the next two requests of any kind
    {"kind": "http_error", "status": 500, "endpoint": "/fapi/v1/algoOrder", "method": "POST", "count": 1},
    {"kind": "http_error", "status": 503, "endpoint": "/fapi/v1/algoOrder", "method": "DELETE", "count": 1},
    {"kind": "unknown_after_execution", "endpoint": "/fapi/v1/order", "count": 1},  # executed, reply lost
    {"kind": "latency", "ms": 11_000, "endpoint": "/fapi/v1/order", "count": 1},  # timeout, then executed
    {"kind": "rate_limit_burst", "count": 1},  # 429 / -1003
    {"kind": "time_skew", "ms": 30_000, "seconds": 2},  # -1021
    {"kind": "reject_orders", "code": -2019, "order_kind": "order", "count": 1},
    {"kind": "reject_orders", "code": -1008, "order_kind": "algo", "count": 1},  # algo placement fails
    {"kind": "drop_connection", "stream": "market"},
    {"kind": "drop_connection", "stream": "private"},
    {"kind": "silent_stream", "stream": "market", "count": 5},  # one candle of every symbol
    {"kind": "silent_stream", "stream": "private", "count": 3},  # the next three user events lost
    {"kind": "expire_listen_key"},
    {"kind": "adl", "fraction": 0.5},  # injected when a position is open (otherwise it waits)
)


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    days: int
    seed: int
    out: Path
    kills: int = 3
    faults_per_day: float = 13.0
    symbols: tuple[str, ...] = SYMBOLS
    balance: float = 1000.0
    env: dict[str, str] = field(default_factory=lambda: dict(LOOSE))
    break_mode: str | None = None  # test-only sabotage of the bot (chaos_bot.BREAK_ENV)
    # The replay runs hours of market time per wall minute, while a venue counts request weight
    # per wall minute: the limit is scaled so that it does not pace the replay (429s and bans are
    # exercised by the ``rate_limit_burst`` fault instead).
    weight_limit: int = 48_000
    # Fills split into executions of at most this quantity: partial fills on every order.
    max_fill_qty: float = 400.0
    max_wall_s: float = 3600.0
    poll_s: float = 0.05


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

    def summary(self) -> list[str]:
        hit = sorted({f["kind"] for f in self.faults if f.get("hits")})
        return [
            f"candles {self.candles}, wall {self.wall_s:.1f} s "
            f"({self.candles / max(self.wall_s, 1e-9):.1f} candles/s)",
            f"bot processes {len(self.incarnations)}, SIGKILLs {self.kills}",
            f"faults injected {len(self.faults)}, hit {sum(1 for f in self.faults if f.get('hits'))} "
            f"({len(hit)} kinds: {', '.join(hit)})",
            f"fault evidence: seen {len(self.evidence.seen)}, nothing to see {len(self.evidence.silent_ok)}, "
            f"lost with a killed process {len(self.evidence.excused)}, not hit {len(self.evidence.not_hit)}",
            f"executions {self.fills}, journal trades {self.trades}, net PnL {self.net_pnl:.4f} USDT",
            f"longest unprotected span {self.max_gap_ms / 1000:.1f} s of replay time",
            f"violations {len(self.violations)}",
        ]


def schedule(rng: random.Random, candles: int, n: int, first: int = 2) -> list[int]:
    """``n`` seeded candle indexes in ``[first, candles - 2)``, sorted."""
    hi = max(first + 1, candles - 2)
    return sorted(rng.randrange(first, hi) for _ in range(n))


def fault_plan(rng: random.Random, candles: int, per_day: float) -> list[tuple[int, dict[str, Any]]]:
    """Every kind of ``FAULTS`` at least once, then seeded random picks, at seeded candles
    (none when ``per_day`` is 0)."""
    if per_day <= 0:
        return []
    n = max(len(FAULTS), round(per_day * candles / 96))
    # The first of each kind in the first half, so that one waiting for an order (a reject, a
    # lost reply) still meets one before the end; the extra ones anywhere.
    first = list(FAULTS)
    rng.shuffle(first)
    extra = [rng.choice(FAULTS) for _ in range(n - len(FAULTS))]
    plan = [
        *zip(schedule(rng, candles // 2 + 2, len(first)), first, strict=True),
        *zip(schedule(rng, candles, len(extra)), extra, strict=True),
    ]
    return sorted(plan, key=lambda p: p[0])


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
            "--max-fill-qty",
            repr(s.max_fill_qty),
        ]
    ).start()
    bot: BotProcess | None = None
    try:
        st = sim.state()
        first_open = int(st["next_candle_open_ms"])
        candles = (int(st["end_ms"]) - first_open) // BAR_MS
        faults = fault_plan(rng, candles, s.faults_per_day)
        kills = [(k, rng.uniform(0.0, 1.5)) for k in schedule(rng, candles, s.kills, first=3)]
        deferred: list[dict[str, Any]] = []
        incarnations: list[cc.Incarnation] = []
        killed = 0
        while True:
            st = sim.state()
            bot = BotProcess(len(incarnations) + 1, sim, s, journal)
            inc = cc.Incarnation(
                bot.n, bot.start_wall_ms, 0, False, int(st["replay_time_ms"]), float(st["balance"])
            )
            incarnations.append(inc)
            while bot.proc.poll() is None:
                if time.monotonic() - t0 > s.max_wall_s:
                    raise TimeoutError(f"chaos run over {s.max_wall_s:.0f} s of wall time")
                st = sim.state()
                done = (int(st["replay_time_ms"]) - first_open) // BAR_MS
                # Faults only reach a bot whose streams are up (a fault aimed at the dead
                # process's sockets or listen key would test nobody).
                conns = st["connections"]
                while faults and faults[0][0] <= done and conns["market"] and conns["private"]:
                    due = faults.pop(0)[1]
                    if due["kind"] == "adl" and not st["positions"]:
                        deferred.append(due)  # a deleverage needs a position: wait for one
                    else:
                        _post(sim, "/sim/faults", due)
                if deferred and st["positions"] and conns["market"] and conns["private"]:
                    _post(sim, "/sim/faults", deferred.pop(0))
                if kills and kills[0][0] <= done and not st["finished"]:
                    time.sleep(kills.pop(0)[1])
                    bot.kill()
                    inc.killed = True
                    killed += 1
                    break
                time.sleep(s.poll_s)
            inc.end_wall_ms = time.time_ns() // 1_000_000
            rc = bot.proc.wait()
            bot.close()
            inc.lines = bot.lines()
            if not inc.killed:
                if rc != 0:
                    tail = "\n".join(inc.lines[-20:])
                    raise RuntimeError(f"chaos bot {bot.n} exited {rc}:\n{tail}")
                if sim.state()["finished"]:
                    break
        audit = sim.call("GET", "/sim/audit")
        fault_log = list(sim.state()["faults"])
        (s.out / "audit.json").write_text(json.dumps(audit, indent=1))
        (s.out / "faults.json").write_text(json.dumps(fault_log, indent=1))
    finally:
        if bot is not None:
            bot.close()
        sim.stop()
    return _check(s, audit, fault_log, journal, incarnations, killed, candles, time.monotonic() - t0)


def _check(
    s: ChaosSettings,
    audit: dict[str, Any],
    fault_log: list[dict[str, Any]],
    journal_path: Path,
    incarnations: list[cc.Incarnation],
    killed: int,
    candles: int,
    wall_s: float,
) -> ChaosResult:
    from perpbot.engine.journal import Journal

    cfg = load_config({**s.env, "SYMBOLS": ",".join(s.symbols)}, env_file=None)
    limits = cc.Limits(MAX_POSITIONS, cfg.max_same_direction, MAX_DAILY_LOSS)
    journal = Journal(journal_path)
    try:
        trades = journal.closed_trades()
        accounted = {sym: set(journal.accounted_keys(sym)) for sym in s.symbols}
        trips = {}
        for sym in s.symbols:
            ks = journal.kill_switch_state(sym)
            if ks is not None and ks.tripped:
                trips[sym] = ks.time_ms
    finally:
        journal.close()
    evidence = cc.check_fault_evidence(fault_log, incarnations)
    violations = [
        *cc.check_protection(audit),
        *cc.check_ledger(audit, trades, accounted, s.balance),
        *cc.check_risk(audit, trips, incarnations, limits),
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
    )
