"""The invariants of the chaos test (issue 10 §4), checked from the simulator's side.

Inputs are what survives the bot processes: the simulator's audit (``GET /sim/audit``: protection
gaps in replay time, every execution with its client id, every income row), its fault log
(``GET /sim/state``), the journal file, and each bot incarnation's log. Each check returns
violations as one line each; an empty list means the invariant held.

- ``check_protection``: no position open without a reduce-only SL and TP for its full quantity
  for more than ``MAX_BARE_MS`` of replay time.
- ``check_ledger``: the executions form round trips (flat → open → flat per symbol); each round
  trip is exactly one journal trade (same side, quantity, entry and exit time, realised PnL,
  fees, funding), every execution is accounted, and Σ journal net PnL = Σ income rows.
- ``check_risk``: at most ``MAX_POSITIONS`` open and ``MAX_SAME_DIRECTION`` per side at every
  execution; no entry on a day whose booked loss already reached the daily limit of the base
  balance the running bot had read; no entry on a symbol while its kill switch was tripped
  (from the trip to the operator's reset, or to the end).
- ``check_client_ids``: an entry client id opened one position, with one order.
- ``check_fault_evidence``: every fault that hit produced its expected log or alert line in the
  log of the bot process alive at the time (``EVIDENCE``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from perpbot.domain.types import ClosedTrade

MAX_BARE_MS = 5_000
QTY_TOL = 1e-9
PNL_TOL = 1e-6
EVIDENCE_WINDOW_MS = 60_000  # a fault's line must appear within this much wall time of its hit
LATE_ROW_GRACE_MS = 600_000  # a late funding row is added at a reconcile (every 300 s) after it shows
KILL_GRACE_MS = 15_000  # a hit this close before a SIGKILL may have lost its line with the process

# Per fault kind (and stream / order kind): the log lines that show the bot saw it.
EVIDENCE: dict[str, str] = {
    "http_error": r"failed \(ExchangeUnavailable|outcome unknown",
    "unknown_after_execution": r"outcome unknown",
    "latency": r"outcome unknown|RequestTimeout|timed out",
    "rate_limit_burst": r"HTTP 429|-1003",
    "time_skew": r"-1021",
    "reject_orders": r"failed \(ExchangeError: {code}",
    "drop_connection:market": r"market stream: .*(1006|closed|ConnectionError|ServerDisconnected)",
    "drop_connection:private": r"user stream: .*(1006|closed|ConnectionError|ServerDisconnected)",
    "silent_stream:market": r"market stream: StreamSilent",
    "silent_stream:private": r"not delivered by the user stream|recovered from REST after reconnecting",
    "expire_listen_key": r"listenKeyExpired",
    "adl": r"partial close .* by order|LIQUIDATION",
    "late_income": r"late funding \S+ added to trade",
}


# Late or out-of-order user-stream events: a correct bot has nothing to say about them (it
# dedups executions and reads state by id); what they could break is judged by the ledger
# (every execution in one trade) and protection checks, so no log line is expected.
REORDERED = ("late_events", "swap_events")


@dataclass(frozen=True, slots=True)
class Limits:
    max_positions: int
    max_same_direction: int
    max_daily_loss: float  # fraction of the base balance


@dataclass(frozen=True, slots=True)
class Trip:
    """A kill switch tripped at ``trip_ms`` (replay time), reset by the operator at the start of
    the bot process started at ``reset_ms`` (None: still tripped at the end)."""

    symbol: str
    trip_ms: int
    reset_ms: int | None

    def blocks(self, symbol: str, at_ms: int) -> bool:
        return (
            symbol == self.symbol
            and at_ms > self.trip_ms
            and (self.reset_ms is None or at_ms < self.reset_ms)
        )


@dataclass(slots=True)
class Incarnation:
    """One bot process: wall-clock life, how it ended, replay time and wallet at its start."""

    n: int
    start_wall_ms: int
    end_wall_ms: int
    killed: bool
    start_replay_ms: int
    start_balance: float
    lines: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RoundTrip:
    symbol: str
    side: str
    entry_ms: int
    exit_ms: int | None
    qty: float
    realized: float
    fees: float
    fills: list[dict[str, Any]]


def _f(x: Any) -> float:
    return float(x)


def check_protection(audit: dict[str, Any], max_bare_ms: int = MAX_BARE_MS) -> list[str]:
    return [
        f"protection: {g['symbol']} {g['side']} {g['quantity']} bare for {g['duration_ms'] / 1000:.0f} s "
        f"of replay time from {g['start_ms']} (covered by {g['covered_by'] or 'nothing'})"
        for g in audit["gaps"]
        if g["duration_ms"] > max_bare_ms
    ]


def round_trips(fills: Iterable[dict[str, Any]]) -> tuple[list[RoundTrip], list[str]]:
    """Executions per symbol in execution order, cut where the position returns to flat."""
    out: list[RoundTrip] = []
    problems: list[str] = []
    by_sym: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in sorted(fills, key=lambda f: (int(f["time_ms"]), int(f["trade_id"]))):
        by_sym[f["symbol"]].append(f)
    for sym, rows in by_sym.items():
        pos = 0.0
        cur: RoundTrip | None = None
        for f in rows:
            sgn = 1.0 if f["side"] == "BUY" else -1.0
            q = _f(f["quantity"])
            if cur is None:
                cur = RoundTrip(
                    sym, "LONG" if sgn > 0 else "SHORT", int(f["time_ms"]), None, 0.0, 0.0, 0.0, []
                )
                if f["reduce_only"]:
                    problems.append(f"ledger: {sym} execution {f['trade_id']} reduce-only while flat")
            new = pos + sgn * q
            if abs(pos) > QTY_TOL and abs(new) > QTY_TOL and (new > 0) != (pos > 0):
                problems.append(f"ledger: {sym} execution {f['trade_id']} flipped the position")
            pos = new
            cur.fills.append(f)
            cur.qty = max(cur.qty, abs(pos))
            cur.realized += _f(f["realized_pnl"])
            cur.fees += _f(f["commission"])
            if abs(pos) <= QTY_TOL:
                cur.exit_ms = int(f["time_ms"])
                out.append(cur)
                cur, pos = None, 0.0
        if cur is not None:
            out.append(cur)
    return out, problems


def check_ledger(
    audit: dict[str, Any],
    trades: Sequence[ClosedTrade],
    accounted: dict[str, set[str]],
    initial_balance: float,
) -> list[str]:
    v: list[str] = []
    rts, problems = round_trips(audit["fills"])
    v += problems
    funding = _funding(audit)
    for f in audit["fills"]:
        if f"t:{f['trade_id']}" not in accounted.get(f["symbol"], set()):
            v.append(f"ledger: {f['symbol']} execution {f['trade_id']} ({f['quantity']}) counted in no trade")
    symbols = sorted({t.symbol for t in trades} | {r.symbol for r in rts})
    for sym in symbols:
        ex = [r for r in rts if r.symbol == sym]
        jt = sorted((t for t in trades if t.symbol == sym), key=lambda t: (t.entry_time_ms, t.exit_time_ms))
        for r in ex:
            if r.exit_ms is None:
                v.append(f"ledger: {sym} {r.side} opened at {r.entry_ms} still open at the end")
        closed = [r for r in ex if r.exit_ms is not None]
        if len(closed) != len(jt):
            v.append(
                f"ledger: {sym}: {len(closed)} round trips on the exchange, {len(jt)} trades in the journal"
            )
        for r, t in zip(closed, jt, strict=False):
            tag = f"ledger: {sym} trade {t.side.value} {t.entry_time_ms}"
            if (t.side.value, t.entry_time_ms, t.exit_time_ms) != (r.side, r.entry_ms, r.exit_ms):
                v.append(
                    f"{tag}: journal ({t.side.value} {t.entry_time_ms}→{t.exit_time_ms}) != exchange "
                    f"({r.side} {r.entry_ms}→{r.exit_ms})"
                )
                continue
            if abs(t.quantity - r.qty) > 1e-6 * max(1.0, r.qty):
                v.append(f"{tag}: quantity {t.quantity} != exchange {r.qty}")
            if abs(t.realized_pnl - r.realized) > PNL_TOL:
                v.append(f"{tag}: realised PnL {t.realized_pnl:.8f} != exchange {r.realized:.8f}")
            if abs(t.entry_fee + t.exit_fee - r.fees) > PNL_TOL:
                v.append(f"{tag}: fees {t.entry_fee + t.exit_fee:.8f} != exchange {r.fees:.8f}")
            fund = sum(x for _ts, x in _own_funding(r, funding))
            if abs(t.funding - fund) > PNL_TOL:
                v.append(f"{tag}: funding {t.funding:.8f} != exchange {fund:.8f}")
    net = sum(t.net_pnl for t in trades)
    income = sum(_f(r["income"]) for r in audit["income"])
    if abs(net - income) > 1e-5:
        v.append(f"ledger: Σ journal net PnL {net:.8f} != Σ simulator income rows {income:.8f}")
    wallet = _f(audit["balance"])
    if abs(wallet - (initial_balance + income)) > 1e-5:
        v.append(f"ledger: wallet {wallet:.8f} != initial {initial_balance} + Σ income {income:.8f}")
    return v


def _day(ms: int) -> int:
    return ms // 86_400_000


def check_risk(
    audit: dict[str, Any],
    trips: Sequence[Trip],
    incarnations: Sequence[Incarnation],
    limits: Limits,
    faults: Sequence[dict[str, Any]] = (),
) -> list[str]:
    """Limits at every entry, in the exchange's execution order (entries and closes of one
    replay millisecond are ordered by execution id, as the bots saw them).

    The day's booked loss counts each closed round trip's funding as the exchange booked it,
    except a funding row a ``late_income`` fault still held back from the income history (or
    had shown less than ``LATE_ROW_GRACE_MS`` before): no bot could have counted it yet, so an
    entry is judged on the loss with and without such rows, and only one over the limit both
    ways is a violation."""
    v: list[str] = []
    rts, _ = round_trips(audit["fills"])
    funding = _funding(audit)
    shows = late_funding_rows(faults)
    for r in sorted(rts, key=lambda r: _first_id(r)):
        at, first = r.entry_ms, _first_id(r)
        live = [x for x in rts if _first_id(x) <= first and (x.exit_ms is None or _last_id(x) > first)]
        if len(live) > limits.max_positions:
            v.append(f"risk: {len(live)} positions open at {at} (max {limits.max_positions})")
        same = sum(1 for x in live if x.side == r.side)
        if same > limits.max_same_direction:
            v.append(f"risk: {same} {r.side} positions at {at} (max {limits.max_same_direction})")
        for t in trips:
            if t.blocks(r.symbol, at):
                until = "never reset" if t.reset_ms is None else f"reset at {t.reset_ms}"
                v.append(
                    f"risk: {r.symbol} entered at {at} while its kill switch was tripped "
                    f"({t.trip_ms}, {until})"
                )
        base = _base_at(incarnations, at)
        closed = [
            x for x in rts if x.exit_ms is not None and _day(x.exit_ms) == _day(at) and _last_id(x) < first
        ]
        booked = sum(_net(x, funding) for x in closed)
        unseen = sum(_unseen_funding(x, funding, shows, at) for x in closed)
        booked = max(booked, booked - unseen)  # the smaller loss of the two (see above)
        if base > 0 and -booked / base >= limits.max_daily_loss + 1e-9:
            day = datetime.fromtimestamp(at / 1000, UTC).date()
            v.append(
                f"risk: {r.symbol} entered at {at} although {day}'s booked loss {booked:.4f} had reached "
                f"{limits.max_daily_loss:.0%} of base {base:.4f}"
            )
    return v


def late_funding_rows(faults: Sequence[dict[str, Any]]) -> dict[tuple[str, int], int]:
    """(symbol, settlement ms) → replay ms from which a funding row held back by a
    ``late_income`` fault (one a read missed: the fault's ``withheld``) was in the history."""
    out: dict[tuple[str, int], int] = {}
    for f in faults:
        if f.get("kind") != "late_income":
            continue
        for tag in f.get("withheld", []):
            sym, kind, ts = tag.rsplit(":", 2)
            if kind == "FUNDING_FEE":
                out[(sym, int(ts))] = int(ts) + int(f["ms"])
    return out


def _unseen_funding(
    r: RoundTrip, funding: dict[str, list[tuple[int, float]]], shows: dict[tuple[str, int], int], at_ms: int
) -> float:
    """The part of ``r``'s funding that was not in the income history long enough before
    ``at_ms`` for a bot to have added it."""
    held = [(shows.get((r.symbol, ts)), x) for ts, x in _own_funding(r, funding)]
    return sum(x for shown, x in held if shown is not None and shown + LATE_ROW_GRACE_MS > at_ms)


def _first_id(r: RoundTrip) -> int:
    return int(r.fills[0]["trade_id"])


def _last_id(r: RoundTrip) -> int:
    return int(r.fills[-1]["trade_id"])


def _funding(audit: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in audit["income"]:
        if row["type"] == "FUNDING_FEE":
            out[row["symbol"]].append((int(row["time_ms"]), _f(row["income"])))
    return out


def _net(r: RoundTrip, funding: dict[str, list[tuple[int, float]]]) -> float:
    """A closed round trip's net PnL as the exchange booked it (funding on [entry, exit))."""
    return r.realized - r.fees + sum(x for _ts, x in _own_funding(r, funding))


def _own_funding(r: RoundTrip, funding: dict[str, list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The funding rows a closed round trip owns: settled on ``[entry, exit)``, as the bot books
    them (one stamped at the exit is the next position's)."""
    assert r.exit_ms is not None
    return [(ts, x) for ts, x in funding[r.symbol] if r.entry_ms <= ts < r.exit_ms]


def _base_at(incarnations: Sequence[Incarnation], at_ms: int) -> float:
    """The base balance the bot running at replay time ``at_ms`` had read at its start."""
    base = 0.0
    for inc in sorted(incarnations, key=lambda i: (i.start_replay_ms, i.n)):
        if inc.start_replay_ms <= at_ms:
            base = inc.start_balance
    return base


def check_client_ids(audit: dict[str, Any]) -> list[str]:
    v: list[str] = []
    rts, _ = round_trips(audit["fills"])
    owner: dict[str, set[int]] = defaultdict(set)
    orders: dict[str, set[int]] = defaultdict(set)
    for k, r in enumerate(rts):
        for f in r.fills:
            if not f["reduce_only"]:
                owner[f["client_id"]].add(k)
                orders[f["client_id"]].add(int(f["order_id"]))
    for cid in sorted(owner):
        if len(owner[cid]) > 1 or len(orders[cid]) > 1:
            v.append(f"client ids: {cid!r} opened {len(owner[cid])} positions with {len(orders[cid])} orders")
    return v


_STAMP = re.compile(r"^(\d+\.\d+) ")


def _stamp_ms(line: str) -> int | None:
    m = _STAMP.match(line)
    return int(float(m.group(1)) * 1000) if m else None


def evidence_pattern(fault: dict[str, Any]) -> str | None:
    """The expected line for ``fault``; None when none is expected (see ``check_fault_evidence``)."""
    kind = fault["kind"]
    if kind in REORDERED:
        return None  # handled as ordinary events: the ledger and protection checks judge them
    if kind in ("drop_connection", "silent_stream"):
        if kind == "silent_stream" and fault.get("stream") == "private":
            executions = [w for w in fault.get("withheld", []) if w.endswith((":TRADE", ":CALCULATED"))]
            if not executions:
                return None  # only order/algo/account news the bot's own REST answers had given
        return EVIDENCE[f"{kind}:{fault['stream']}"]
    if kind == "reject_orders":
        return EVIDENCE[kind].format(code=fault["code"])
    if kind == "late_income" and fault.get("income_type") != "FUNDING_FEE":
        return None  # the bot reads fees from its executions: the ledger check judges the rest
    return EVIDENCE[kind]


@dataclass(slots=True)
class EvidenceReport:
    violations: list[str] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    not_hit: list[str] = field(default_factory=list)
    excused: list[str] = field(default_factory=list)  # hit right before a SIGKILL, line lost
    silent_ok: list[str] = field(default_factory=list)  # hit, nothing the bot needed to see


def fault_label(f: dict[str, Any]) -> str:
    extra = f.get("stream") or f.get("code") or f.get("status") or f.get("event") or f.get("ms") or ""
    return f"{f['kind']}{':' + str(extra) if extra != '' else ''}"


def check_fault_evidence(
    faults: Sequence[dict[str, Any]], incarnations: Sequence[Incarnation]
) -> EvidenceReport:
    rep = EvidenceReport()
    for f in faults:
        label = fault_label(f)
        hit = f.get("first_hit_ms")
        if not f.get("hits") or hit is None:
            rep.not_hit.append(label)
            continue
        pattern = evidence_pattern(f)
        if pattern is None or (f["kind"] == "expire_listen_key" and f.get("told") == 0):
            # (A key that died while no socket was on it, e.g. during a reconnect: nobody was
            # told; the bot's next connect takes a new key, as on Binance.)
            rep.silent_ok.append(label)
            continue
        alive = [i for i in incarnations if i.start_wall_ms <= hit <= i.end_wall_ms]
        rx = re.compile(pattern)
        found = False
        for inc in alive:
            for line in inc.lines:
                t = _stamp_ms(line)
                if t is not None and hit - 1_000 <= t <= hit + EVIDENCE_WINDOW_MS and rx.search(line):
                    found = True
                    break
        if found:
            rep.seen.append(label)
        elif not alive or any(i.killed and i.end_wall_ms - hit <= KILL_GRACE_MS for i in alive):
            rep.excused.append(label)
        else:
            rep.violations.append(f"faults: {label} hit at {hit} but no line matching /{pattern}/ followed")
    return rep
