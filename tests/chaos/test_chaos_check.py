"""Each chaos invariant (``runtime/chaos_check.py``) holds on a consistent record and fails on a
record broken in exactly the way it guards against: a missing or doubled journal trade, a PnL
that disagrees with the income rows, a limit overrun, an entry after a kill-switch trip or on a
day past the loss limit, a reused client id, a fault nobody noticed."""

from __future__ import annotations

from typing import Any

from perpbot.domain.types import ClosedTrade, CloseReason, Side
from perpbot.runtime import chaos_check as cc

T0 = 1_736_294_400_000  # a UTC midnight
MIN = 60_000
LIMITS = cc.Limits(max_positions=3, max_same_direction=2, max_daily_loss=0.05)


def fill(
    sym: str, tid: int, side: str, qty: float, t: int, *, ro: bool, cid: str, oid: int, rp: float = 0.0
) -> dict:
    return {
        "symbol": sym,
        "order_id": oid,
        "trade_id": tid,
        "client_id": cid,
        "reduce_only": ro,
        "side": side,
        "price": "1.0",
        "quantity": str(qty),
        "commission": "0.05",
        "realized_pnl": str(rp),
        "time_ms": t,
    }


def income(fills: list[dict]) -> list[dict]:
    rows = []
    for f in fills:
        rows.append(
            {"symbol": f["symbol"], "type": "COMMISSION", "income": str(-0.05), "time_ms": f["time_ms"]}
        )
        if float(f["realized_pnl"]):
            rows.append(
                {
                    "symbol": f["symbol"],
                    "type": "REALIZED_PNL",
                    "income": f["realized_pnl"],
                    "time_ms": f["time_ms"],
                }
            )
    return rows


def trade(sym: str, side: Side, t_in: int, t_out: int, qty: float, rp: float) -> ClosedTrade:
    return ClosedTrade(
        symbol=sym,
        side=side,
        entry_time_ms=t_in,
        exit_time_ms=t_out,
        entry_price=1.0,
        exit_price=1.0,
        quantity=qty,
        realized_pnl=rp,
        entry_fee=0.05,
        exit_fee=0.05,
        funding=0.0,
        reason=CloseReason.TP,
    )


def record() -> tuple[dict[str, Any], list[ClosedTrade], dict[str, set[str]]]:
    """Two consistent trades: XRP long in two executions closed by a TP, TRX short closed."""
    fills = [
        fill("XRPUSDT", 1, "BUY", 100, T0 + 15 * MIN, ro=False, cid="pb-x-1-entry", oid=11),
        fill("TRXUSDT", 2, "SELL", 50, T0 + 15 * MIN, ro=False, cid="pb-t-1-entry", oid=12),
        fill("XRPUSDT", 3, "SELL", 100, T0 + 45 * MIN, ro=True, cid="pb-x-1-tp", oid=13, rp=4.0),
        fill("TRXUSDT", 4, "BUY", 50, T0 + 60 * MIN, ro=True, cid="pb-t-1-sl", oid=14, rp=-2.0),
    ]
    fills[0]["commission"] = "0.05"
    audit = {"fills": fills, "income": income(fills), "balance": str(1000 + 4.0 - 2.0 - 0.2), "gaps": []}
    trades = [
        trade("XRPUSDT", Side.LONG, T0 + 15 * MIN, T0 + 45 * MIN, 100, 4.0),
        trade("TRXUSDT", Side.SHORT, T0 + 15 * MIN, T0 + 60 * MIN, 50, -2.0),
    ]
    accounted = {"XRPUSDT": {"t:1", "t:3"}, "TRXUSDT": {"t:2", "t:4"}}
    return audit, trades, accounted


def incarnation(lines: list[str], killed: bool = False) -> cc.Incarnation:
    return cc.Incarnation(1, 1_000_000, 2_000_000, killed, T0, 1000.0, lines)


def test_a_consistent_record_passes_every_check() -> None:
    audit, trades, accounted = record()
    assert cc.check_ledger(audit, trades, accounted, 1000.0) == []
    assert cc.check_risk(audit, [], [incarnation([])], LIMITS) == []
    assert cc.check_client_ids(audit) == []
    assert (
        cc.check_protection(
            {
                "gaps": [
                    {
                        "symbol": "X",
                        "side": "LONG",
                        "quantity": 1,
                        "start_ms": 0,
                        "end_ms": 5000,
                        "duration_ms": 5000,
                        "covered_by": [],
                    }
                ]
            }
        )
        == []
    )


def test_a_position_bare_for_more_than_five_seconds_is_caught() -> None:
    gap = {
        "symbol": "XRPUSDT",
        "side": "LONG",
        "quantity": 1,
        "start_ms": 0,
        "end_ms": None,
        "duration_ms": 900_000,
        "covered_by": ["TAKE_PROFIT_MARKET"],
    }
    (v,) = cc.check_protection({"gaps": [gap]})
    assert "XRPUSDT LONG 1 bare for 900 s" in v and "TAKE_PROFIT_MARKET" in v


def test_a_trade_missing_from_the_journal_is_caught() -> None:
    audit, trades, accounted = record()
    v = cc.check_ledger(audit, trades[:1], accounted, 1000.0)
    assert any("TRXUSDT: 1 round trips on the exchange, 0 trades in the journal" in x for x in v)
    assert any("Σ journal net PnL" in x for x in v)


def test_a_trade_journaled_twice_is_caught() -> None:
    audit, trades, accounted = record()
    v = cc.check_ledger(audit, [*trades, trades[0]], accounted, 1000.0)
    assert any("XRPUSDT: 1 round trips on the exchange, 2 trades in the journal" in x for x in v)


def test_an_execution_counted_in_no_trade_is_caught() -> None:
    audit, trades, accounted = record()
    accounted["XRPUSDT"].discard("t:3")
    (v,) = cc.check_ledger(audit, trades, accounted, 1000.0)
    assert "XRPUSDT execution 3" in v and "counted in no trade" in v


def test_a_pnl_that_disagrees_with_the_income_rows_is_caught() -> None:
    audit, trades, accounted = record()
    trades[1] = trade("TRXUSDT", Side.SHORT, T0 + 15 * MIN, T0 + 60 * MIN, 50, -1.0)
    v = cc.check_ledger(audit, trades, accounted, 1000.0)
    assert any("realised PnL -1.00000000 != exchange -2.00000000" in x for x in v)


def test_a_position_still_open_at_the_end_is_caught() -> None:
    audit, trades, accounted = record()
    audit["fills"] = audit["fills"][:3]
    v = cc.check_ledger(audit, trades, accounted, 1000.0)
    assert any("TRXUSDT SHORT opened at" in x and "still open" in x for x in v)


def test_more_positions_than_the_limits_allow_are_caught() -> None:
    fills = [
        fill(s, i, "BUY", 10, T0 + i * MIN, ro=False, cid=f"e{i}", oid=i)
        for i, s in enumerate(("XRPUSDT", "TRXUSDT", "DOGEUSDT", "ADAUSDT"), start=1)
    ]
    v = cc.check_risk({"fills": fills, "income": []}, [], [incarnation([])], LIMITS)
    assert any("4 positions open" in x for x in v)
    assert any("3 LONG positions" in x for x in v)


def test_an_entry_after_the_kill_switch_tripped_is_caught() -> None:
    audit, _, _ = record()
    (v,) = cc.check_risk(audit, [cc.Trip("TRXUSDT", T0, None)], [incarnation([])], LIMITS)
    assert "TRXUSDT entered at" in v and f"kill switch was tripped ({T0}, never reset)" in v


def test_an_entry_before_the_operator_reset_is_caught_and_one_after_it_is_not() -> None:
    audit, _, _ = record()
    entry = min(int(f["time_ms"]) for f in audit["fills"] if f["symbol"] == "TRXUSDT")
    (v,) = cc.check_risk(audit, [cc.Trip("TRXUSDT", T0, entry + 1)], [incarnation([])], LIMITS)
    assert f"kill switch was tripped ({T0}, reset at {entry + 1})" in v
    assert cc.check_risk(audit, [cc.Trip("TRXUSDT", T0, entry)], [incarnation([])], LIMITS) == []
    assert cc.check_risk(audit, [cc.Trip("XRPUSDT", T0, None)], [incarnation([])], LIMITS) != []


def test_an_entry_on_a_day_past_the_loss_limit_is_caught() -> None:
    fills = [
        fill("XRPUSDT", 1, "BUY", 100, T0 + MIN, ro=False, cid="e1", oid=1),
        fill("XRPUSDT", 2, "SELL", 100, T0 + 2 * MIN, ro=True, cid="sl1", oid=2, rp=-60.0),
        fill("XRPUSDT", 3, "BUY", 100, T0 + 3 * MIN, ro=False, cid="e2", oid=3),
        fill("XRPUSDT", 4, "SELL", 100, T0 + 4 * MIN, ro=True, cid="tp2", oid=4, rp=1.0),
    ]
    audit = {"fills": fills, "income": income(fills)}
    (v,) = cc.check_risk(audit, [], [incarnation([])], LIMITS)
    assert "entered at" in v and "booked loss -60.1000 had reached 5% of base 1000.0000" in v
    # the next day the same entry is allowed
    for f in fills[2:]:
        f["time_ms"] += 86_400_000
    assert cc.check_risk(audit, [], [incarnation([])], LIMITS) == []


def test_a_client_id_that_opened_two_positions_is_caught() -> None:
    audit, _, _ = record()
    audit["fills"][1]["client_id"] = "pb-x-1-entry"
    (v,) = cc.check_client_ids(audit)
    assert "'pb-x-1-entry' opened 2 positions with 2 orders" in v


def test_a_fault_that_left_no_line_is_caught_and_one_that_did_is_seen() -> None:
    f = {"kind": "rate_limit_burst", "hits": 1, "first_hit_ms": 1_500_000}
    line = "1500.100 WARNING perpbot.exchange.binance.budget: binance: HTTP 429, every request waits 1 s"
    assert cc.check_fault_evidence([f], [incarnation([line])]).seen == ["rate_limit_burst"]
    rep = cc.check_fault_evidence([f], [incarnation(["1500.100 INFO nothing to see"])])
    assert len(rep.violations) == 1 and "rate_limit_burst hit at 1500000" in rep.violations[0]


def test_a_fault_hit_just_before_a_kill_is_excused_and_an_unhit_one_is_listed() -> None:
    hit = {"kind": "expire_listen_key", "hits": 1, "first_hit_ms": 1_995_000}
    unhit = {"kind": "reject_orders", "code": -2019, "hits": 0, "first_hit_ms": None}
    rep = cc.check_fault_evidence([hit, unhit], [incarnation([], killed=True)])
    assert (
        rep.violations == []
        and rep.excused == ["expire_listen_key"]
        and rep.not_hit == ["reject_orders:-2019"]
    )


def test_a_listen_key_that_died_with_no_socket_on_it_needs_no_line() -> None:
    # Seed 11 of the 45-day chaos run: a private-stream drop, then the key expired 2 ms later,
    # while the bot was reconnecting: nobody was told, and the reconnect took a new key.
    told = {"kind": "expire_listen_key", "hits": 1, "first_hit_ms": 1_500_000, "told": 1}
    untold = {**told, "told": 0}
    quiet = [incarnation(["1500.100 INFO nothing to see"])]
    assert len(cc.check_fault_evidence([told], quiet).violations) == 1
    rep = cc.check_fault_evidence([untold], quiet)
    assert rep.violations == [] and rep.silent_ok == ["expire_listen_key"]


def test_a_silent_user_stream_needs_a_line_only_when_it_swallowed_an_execution() -> None:
    quiet = {
        "kind": "silent_stream",
        "stream": "private",
        "hits": 2,
        "first_hit_ms": 1_500_000,
        "withheld": ["AlgoUpdate", "AccountUpdate"],
    }
    loud = {**quiet, "withheld": ["AlgoUpdate", "OrderTradeUpdate:TRADE"]}
    rep = cc.check_fault_evidence([quiet, loud], [incarnation([])])
    assert rep.silent_ok == ["silent_stream:private"] and len(rep.violations) == 1


def test_a_held_back_funding_row_needs_the_late_funding_line_and_other_rows_none() -> None:
    """A funding row that a read missed must be added later ("late funding … added"); a held
    back fee or PnL row needs no line (the bot takes those from its executions), the ledger
    check judges it."""
    funding = {"kind": "late_income", "income_type": "FUNDING_FEE", "hits": 2, "first_hit_ms": 1_500_000}
    fee = {**funding, "income_type": "COMMISSION"}
    added = "1501.200 WARNING perpbot.engine.bot: XRPUSDT: late funding -0.01234567 added to trade 7"
    assert cc.check_fault_evidence([funding], [incarnation([added])]).seen == ["late_income"]
    (v,) = cc.check_fault_evidence([funding], [incarnation(["1501.200 INFO nothing"])]).violations
    assert "late_income hit at 1500000" in v
    assert cc.check_fault_evidence([fee], [incarnation([])]).silent_ok == ["late_income"]


def test_a_funding_row_held_back_from_the_history_counts_in_the_loss_limit_only_once_shown() -> None:
    """No bot can count a funding row the income history does not show yet: an entry that only
    that row would have blocked is no violation while the row was held back (and a reconcile
    later), one after that is."""
    fills = [
        fill("XRPUSDT", 1, "BUY", 100, T0 + MIN, ro=False, cid="e1", oid=1),
        fill("XRPUSDT", 2, "SELL", 100, T0 + 3 * 3_600_000, ro=True, cid="sl1", oid=2, rp=-49.0),
        fill("XRPUSDT", 3, "BUY", 100, T0 + 4 * 3_600_000, ro=False, cid="e2", oid=3),
        fill("XRPUSDT", 4, "SELL", 100, T0 + 5 * 3_600_000, ro=True, cid="tp2", oid=4, rp=1.0),
    ]
    settled = T0 + 2 * 3_600_000  # the first trade paid 1.0 of funding, booked at exchange time
    paid = {"symbol": "XRPUSDT", "type": "FUNDING_FEE", "income": "-1.0", "time_ms": settled}
    audit = {"fills": fills, "income": [*income(fills), paid]}
    held = {"kind": "late_income", "income_type": "FUNDING_FEE", "ms": 3 * 3_600_000}
    # Loss 49 + 0.1 fees + 1.0 funding = 50.1 ≥ 5 % of 1000; without the row 49.1.
    (v,) = cc.check_risk(audit, [], [incarnation([])], LIMITS)  # the row was always there
    assert "booked loss -50.1000" in v
    missed = [{**held, "withheld": [f"XRPUSDT:FUNDING_FEE:{settled}"]}]
    assert cc.check_risk(audit, [], [incarnation([])], LIMITS, missed) == []  # shows at T0+5h
    early = [{**held, "ms": 3_600_000, "withheld": [f"XRPUSDT:FUNDING_FEE:{settled}"]}]
    (v,) = cc.check_risk(audit, [], [incarnation([])], LIMITS, early)  # showed at T0+3h, entry 4h
    assert "booked loss -50.1000" in v
    unread = [{**held, "withheld": []}]  # held back, but no read missed it: it was there in time
    assert len(cc.check_risk(audit, [], [incarnation([])], LIMITS, unread)) == 1
