"""The bot's client order ids (issue 9): deterministic from symbol, candle open time and intent
(``perpbot.domain.client_ids``), within Binance's id rules, so a retry or a restart finds the
order it sent instead of sending a second one."""

from __future__ import annotations

from pathlib import Path

from perpbot.domain.client_ids import is_valid_client_id, make_client_id
from perpbot.domain.types import CloseReason
from perpbot.engine.bot import SymbolBot
from perpbot.engine.journal import Journal

from .factories import BAR, SYM, T0, flat
from .harness import LONG, World


def _cids(journal: Journal) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for o in journal.orders(SYM):
        out.setdefault(o.kind, []).append(o.client_id)
    return out


async def test_entry_stops_and_close_carry_ids_from_symbol_candle_and_intent() -> None:
    w = World(flat(100, 6))
    await w.start()
    await w.run({1: LONG}, until=2)  # the entry is sent at the close of bar 1
    await w.bot.close_position(CloseReason.END_OF_DATA)
    entry_candle, close_candle = T0 + 2 * BAR, T0 + 3 * BAR
    assert _cids(w.journal) == {
        "ENTRY": [make_client_id(SYM, entry_candle, "entry")],
        "SL": [make_client_id(SYM, entry_candle, "sl")],
        "TP": [make_client_id(SYM, entry_candle, "tp")],
        "END_OF_DATA": [make_client_id(SYM, close_candle, "close")],
    }
    assert all(is_valid_client_id(c) for cs in _cids(w.journal).values() for c in cs)


async def test_a_second_order_of_one_intent_in_a_candle_gets_the_next_number() -> None:
    w = World(flat(100, 4))
    await w.start()
    await w.run({1: LONG}, until=2)
    assert w.bot._cid("sl") == make_client_id(SYM, T0 + 3 * BAR, "sl")
    assert w.bot._cid("sl") == make_client_id(SYM, T0 + 3 * BAR, "sl2")
    assert w.bot._cid("tp") == make_client_id(SYM, T0 + 3 * BAR, "tp")


async def test_a_restart_in_the_same_candle_reuses_the_entry_id_but_not_a_stop_id(tmp_path: Path) -> None:
    """The entry id is the candle's (an earlier entry still open makes Binance refuse a second);
    the previous run's stop may still be open under its id, so a new stop takes the next one."""
    path = tmp_path / "journal.sqlite"
    w = World(flat(100, 4), journal=Journal(path))
    await w.start()
    await w.run({1: LONG}, until=1)
    w.journal.flush()
    candle = T0 + 2 * BAR
    bot2 = SymbolBot(SYM, w.cfg, w.ex, w.risk, w.filter, Journal(path), w.clock, w.notifier)
    await bot2.start()
    assert w.clock.now_ms() == candle
    assert bot2._cid("entry") == make_client_id(SYM, candle, "entry")
    assert bot2._cid("sl") == make_client_id(SYM, candle, "sl2")
    assert bot2.in_position  # recovered by the journaled entry: no second entry is sent
    entries = [o for o in bot2._journal.orders(SYM) if o.kind == "ENTRY"]
    assert len(entries) == 1
