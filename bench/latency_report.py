"""The figures of ``bench_runtime.py`` from one run's ``perpbot.latency.LatencyProbe``.

Why a module of its own: the definitions are the benchmark's contract (which moment starts the
clock, which entries are counted); they read better apart from the process plumbing.

Three clocks start per decision (all ``time.monotonic``, one machine, so the simulator child's
stamps compare with the bot's):
- ``e2e``: the primary's closed-kline frame received → the entry order handed to aiohttp (the
  issue's wording, kept);
- ``decision``: the decision's inputs complete → the entry order handed to aiohttp. The inputs
  are the closed klines of the primary, BTC and ETH of that open time (the features need all
  three; each frame's receipt by the bot), and, only when the decision reads them (an ML filter
  configured), the OI/funding answers (the job's ``inputs`` stamp). A candle whose BTC/ETH never
  came counts from the moment the aligner gave up;
- ``venue``: the simulator queued the last of those klines to its sockets → the order. It
  charges the bot for its own read lag (a frame waiting in our socket while the event loop did
  other work), which the frames' receipt stamps cannot show; ``read lag`` reports that lag alone.
- ``cpu``: the event loop thread's CPU time from the last input's receipt to the order (the
  bot's own work, all symbols'; no waiting, no preemption): the load-independent companion of
  ``decision`` on a shared machine (``cpu_bar``: the same from the bar's first closed kline of
  any symbol, which no reordering of the reads can move).
Every entry is counted; re-entries after a reverse (SPEC §8.6: close, confirmation, cleanup,
then the entry) are reported apart from entries made flat, never dropped. The entries made flat
are split once more: ``first`` is an entry that is the first order of its bar (no other symbol's
entry or reverse close went out before it in that bar). The others waited, by SPEC §9's entry
lock (balance read → order → registration serialised across bots), for an earlier entry's round
trips, so the p99 over all entries includes at least two order round trips whenever two symbols
enter in the same bar: the ``first`` figures are what the bot's own path costs. ``quiet``: the
entries made flat during whose window (inputs → order) the loop handled no execution of another
symbol (``LatencyProbe.executions``: a stop-loss or take-profit fill booked, the other protective
order cancelled, an entry fill). The replay makes those collide with the close: the simulator
plays a whole candle in one instant, so its fills reach the bot together with the closed klines
(just before them), where live they come whenever the price crosses the level during the bar.
"""

from __future__ import annotations

import statistics
from typing import Any

# The candle job's steps and REST reads, in the order the breakdown prints them.
STEPS = (
    "job",
    "oi>",
    "funding>",
    "signal",
    "position>",
    "aligned",
    "features",
    "oi<",
    "funding<",
    "decide",
    "position<",
)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100.0 * len(s) + 0.5) - 1))]


def summarise(
    probe: Any, traded: list[str], inputs_of: tuple[str, ...], warmup: int, released: dict[str, float]
) -> dict[str, Any]:
    """Every figure of one run (seconds in the probe, milliseconds out)."""
    opens = sorted({o for _s, o in probe.handled})
    counted = set(opens[warmup:])

    def inputs_at(sym: str, o: int) -> float | None:
        got = [probe.klines.get((s, o)) for s in (sym, *inputs_of)]
        steps = probe.stages.get((sym, o), {})
        if any(t is None for t in got):  # BTC/ETH never came: the aligner's give-up is the start
            return steps.get("aligned")
        return max([t for t in got if t is not None] + ([steps["inputs"]] if "inputs" in steps else []))

    def released_at(sym: str, o: int) -> float | None:
        got = [released.get(f"{s} {o}") for s in (sym, *inputs_of)]
        return None if any(t is None for t in got) else max(t for t in got if t is not None)

    def cpu_of_inputs(sym: str, o: int) -> float | None:
        got = [(probe.klines.get((s, o)), probe.kline_cpu.get((s, o))) for s in (sym, *inputs_of)]
        if any(t is None or c is None for t, c in got):
            return None
        return max(got)[1]  # thread time at the last input's receipt

    first_cpu: dict[int, float] = {}  # open time → thread time at the bar's first closed kline
    for (_s, o), c in probe.kline_cpu.items():
        first_cpu[o] = min(c, first_cpu.get(o, c))
    rows = []  # (symbol, open, sent, kline, inputs, released, is re-entry, cpu at order, at inputs)
    for sym, o, sent, cpu in probe.entries:
        kline = probe.klines.get((sym, o))
        if o not in counted or kline is None:
            continue
        again = (sym, o) in probe.closes
        rows.append(
            (sym, o, sent, kline, inputs_at(sym, o), released_at(sym, o), again, cpu, cpu_of_inputs(sym, o))
        )
    out: dict[str, Any] = {"entries": len(rows)}
    orders: dict[int, list[float]] = {}  # open time → every entry and reverse close sent in it
    for _s, o, sent, _c in probe.entries:
        orders.setdefault(o, []).append(sent)
    for (_s, o), sent in probe.closes.items():
        orders.setdefault(o, []).append(sent)
    first = [r for r in rows if not r[6] and r[2] <= min(orders[r[1]])]
    out["first_entries"] = len(first)

    def crowded(r: tuple[Any, ...]) -> bool:
        # Another symbol's execution (its stop-loss, take-profit or entry fill) was handled by the
        # loop between this entry's inputs and its order.
        start = r[4] if r[4] is not None else r[3]
        return any(s != r[0] and a < r[2] and b > start for s, a, b in probe.executions)

    quiet = [r for r in rows if not r[6] and not crowded(r)]
    out["quiet_entries"] = len(quiet)
    groups = (("entry", rows), ("flat", [r for r in rows if not r[6]]), ("first", first), ("quiet", quiet))
    for label, chosen in groups:
        for clock, start in (("e2e", 3), ("decision", 4), ("venue", 5)):
            ds = [r[2] - r[start] for r in chosen if r[start] is not None]
            out[f"{label}_{clock}_p50_ms"] = pct(ds, 50) * 1000
            out[f"{label}_{clock}_p99_ms"] = pct(ds, 99) * 1000
            out[f"{label}_{clock}_max_ms"] = max(ds, default=float("nan")) * 1000
        cpu = [r[7] - r[8] for r in chosen if r[8] is not None]
        out[f"{label}_cpu_p50_ms"] = pct(cpu, 50) * 1000
        out[f"{label}_cpu_p99_ms"] = pct(cpu, 99) * 1000
        cpu = [r[7] - first_cpu[r[1]] for r in chosen if r[1] in first_cpu]
        out[f"{label}_cpu_bar_p50_ms"] = pct(cpu, 50) * 1000
        out[f"{label}_cpu_bar_p99_ms"] = pct(cpu, 99) * 1000
    again = [r for r in rows if r[6]]
    out["flat_entries"] = len(rows) - len(again)
    out["reentries"] = len(again)
    out["reentry_e2e_p50_ms"] = pct([r[2] - r[3] for r in again], 50) * 1000
    out["reentry_decision_p50_ms"] = pct([r[2] - r[4] for r in again if r[4] is not None], 50) * 1000
    closes = [t - probe.klines[k] for k, t in probe.closes.items() if k[1] in counted and k in probe.klines]
    out["reverse_close_p99_ms"] = pct(closes, 99) * 1000
    handled = [(k, t) for k, t in probe.handled.items() if k[1] in counted and k in probe.klines]
    out["handle_p50_ms"] = pct([t - probe.klines[k] for k, t in handled], 50) * 1000
    out["handle_p99_ms"] = pct([t - probe.klines[k] for k, t in handled], 99) * 1000
    lag = [
        t - released[f"{s} {o}"]
        for (s, o), t in probe.klines.items()
        if o in counted and f"{s} {o}" in released
    ]
    out["read_lag_p50_ms"] = pct(lag, 50) * 1000
    out["read_lag_p99_ms"] = pct(lag, 99) * 1000
    bursts = []
    for o in opens[warmup:]:
        got = [(probe.klines.get((s, o)), probe.handled.get((s, o))) for s in traded]
        if all(a is not None and b is not None for a, b in got):
            bursts.append(max(b for _, b in got) - min(a for a, _ in got))  # type: ignore[type-var,operator]
    out["burst_p50_ms"] = pct(bursts, 50) * 1000
    out["burst_max_ms"] = max(bursts, default=float("nan")) * 1000
    out["missed_klines"] = sum(
        1 for k, _ in probe.handled.items() if k[1] in counted and k not in probe.klines
    )
    out["steps_ms"] = steps(probe, [r for r in rows if not r[6]])
    return out


def steps(probe: Any, flat: list[tuple[Any, ...]]) -> dict[str, float]:
    """Median time of each step of the candle job, relative to the inputs complete, over the
    entries made flat; ``balance<`` is the last balance answer before the order, ``order`` the
    order itself, ``kline`` the primary's own frame (negative: it came before BTC/ETH)."""
    at: dict[str, list[float]] = {}
    for sym, o, sent, kline, inputs, *_ in flat:
        if inputs is None:
            continue
        marks = dict(probe.stages.get((sym, o), {}))
        marks["kline"] = kline
        marks["order"] = sent
        answers = [t for name, t in probe.balances if name == "balance<" and t <= sent]
        if answers:
            marks["balance<"] = answers[-1]
        for name, t in marks.items():
            at.setdefault(name, []).append((t - inputs) * 1000)
    order = ["kline", *STEPS, "balance<", "order"]
    return {n: statistics.median(at[n]) for n in order if n in at}
