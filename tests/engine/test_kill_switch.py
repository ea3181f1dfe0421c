"""Per-symbol kill switch (SPEC §13 row 27): trips, latching, persistence, reset at boot."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from perpbot.domain.types import ClosedTrade, Side
from perpbot.engine.journal import Journal
from perpbot.engine.kill_switch import KillSwitch, evaluate

from .factories import SYM, T0, closed_trade


def trade(net: float, sym: str = SYM) -> ClosedTrade:
    return closed_trade(net, symbol=sym, side=Side.SHORT)


def feed(j: Journal, ks: KillSwitch, pnls: list[float]) -> list[str | None]:
    out = []
    for p in pnls:
        t = trade(p)
        j.record_trade(t)
        out.append(ks.record(t, T0))
    return out


def test_rule_fast_and_slow() -> None:
    assert evaluate([-1.0] * 7) is None
    assert evaluate([-1.0] * 8).startswith("fast")  # type: ignore[union-attr]
    assert evaluate([5.0] + [-1.0] * 7) is None
    assert evaluate([-1.0] * 7 + [0.0]) is None  # zero is not a loss
    # PF 0.6 over 15: gross profit 6, gross loss 10, never 8 losses in a row
    pf06 = [1.0, -1.0] * 6 + [-1.0, -1.0, -2.0]
    assert sum(p for p in pf06 if p > 0) / -sum(p for p in pf06 if p < 0) == 0.6
    assert evaluate(pf06).startswith("slow")  # type: ignore[union-attr]
    assert evaluate(pf06[1:]) is None  # fewer than 15 trades: no slow verdict
    assert evaluate([1.0] * 15) is None  # no gross loss: PF undefined, no trip
    assert evaluate([1.0, -1.0] * 7 + [1.0]) is None  # PF 1.14


def test_eight_straight_losses_trip() -> None:
    j = Journal()
    ks = KillSwitch(SYM, j)
    ks.boot(T0)
    results = feed(j, ks, [2.0] + [-1.0] * 8)
    assert results[:-1] == [None] * 8
    assert results[-1] is not None and results[-1].startswith("fast")
    assert ks.tripped
    state = j.kill_switch_state(SYM)
    assert state is not None and state.tripped
    assert [e.kind for e in j.events(symbol=SYM)] == ["kill_switch.trip"]


def test_fifteen_trade_pf_06_trips() -> None:
    j = Journal()
    ks = KillSwitch(SYM, j)
    ks.boot(T0)
    results = feed(j, ks, [1.0, -1.0] * 6 + [-1.0, -1.0, -2.0])
    assert results[-1] is not None and results[-1].startswith("slow")
    assert all(r is None for r in results[:-1])


def trip_in_file(path: Path, then: list[float] | None = None) -> None:
    """A process that trips the kill switch with 8 losers (then trades ``then``) and exits."""
    with Journal(path) as j:
        ks = KillSwitch(SYM, j)
        ks.boot(T0)
        feed(j, ks, [-1.0] * 8)
        feed(j, ks, then or [])
        assert ks.tripped


def test_latched_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    trip_in_file(path, then=[5.0, 5.0])  # winners later do not clear it
    with Journal(path) as j2:
        ks2 = KillSwitch(SYM, j2)
        assert ks2.boot(T0 + 10) is not None
        assert ks2.tripped


def test_boot_rebuilds_from_trades_even_without_state() -> None:
    """Trades journaled but the trip never persisted (crash between): boot checks the tail."""
    j = Journal()
    for _ in range(8):
        j.record_trade(trade(-1.0))
    ks = KillSwitch(SYM, j)
    assert ks.boot(T0) is not None


def test_reset_flag_clears_at_boot_and_is_journaled(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    trip_in_file(path)
    with Journal(path) as j2:
        ks2 = KillSwitch(SYM, j2)
        assert ks2.boot(T0 + 1, reset=True) is None
        assert not ks2.tripped
        assert j2.events("kill_switch.reset", SYM)
        # The old losers no longer count: one more loser does not re-trip it.
        t = trade(-1.0)
        j2.record_trade(t)
        assert ks2.record(t, T0 + 2) is None
    with Journal(path) as j3:  # the next restart without the flag keeps it clear
        ks3 = KillSwitch(SYM, j3)
        assert ks3.boot(T0 + 3) is None
        # ...and counts only trades after the reset: seven more losers (8 in total) trip it.
        ks3_results = feed(j3, ks3, [-1.0] * 7)
        assert ks3_results[-1] is not None


def test_symbols_are_independent() -> None:
    j = Journal()
    for _ in range(8):
        j.record_trade(trade(-1.0, "TRXUSDT"))
    ks = KillSwitch(SYM, j)
    assert ks.boot(T0) is None


def test_an_amended_trade_is_judged_as_amended_as_after_a_restart() -> None:
    """Seven losers, then a trade booked at +0.01 whose entry fee (0.03) is added later: the
    running switch trips on the amendment, as a restart reading the journal does. Old code went
    on judging the booked figure; only the next restart tripped."""
    j = Journal()
    ks = KillSwitch(SYM, j)
    ks.boot(T0)
    feed(j, ks, [-1.0] * 7)
    t8 = trade(0.01)
    tid = j.record_trade(t8)
    assert ks.record(t8, T0, tid) is None
    assert ks.amend(tid + 100, -5.0, T0) is None and not ks.tripped  # not in the window: nothing
    amended = replace(t8, entry_fee=t8.entry_fee + 0.03)
    assert amended.net_pnl < 0
    j.amend_trade_fees(tid, amended.entry_fee, amended.net_pnl)
    reason = ks.amend(tid, amended.net_pnl, T0)
    assert reason is not None and reason.startswith("fast") and ks.tripped
    assert KillSwitch(SYM, j).boot(T0) == reason
