"""Deterministic client ids within Binance's rule."""

from __future__ import annotations

import pytest

from perpbot.exchange.binance.client_ids import is_valid_client_id, make_client_id

T = 1_736_294_400_000


def test_same_symbol_candle_and_intent_give_the_same_id() -> None:
    a = make_client_id("XRPUSDT", T, "entry")
    assert a == make_client_id("xrpusdt", T + 59_999, "entry")  # same minute, case-insensitive symbol
    assert a != make_client_id("XRPUSDT", T + 15 * 60_000, "entry")
    assert a != make_client_id("XRPUSDT", T, "sl")
    assert a.startswith("pb-XRPUSDT-") and is_valid_client_id(a)


def test_long_symbols_stay_within_36_characters() -> None:
    cid = make_client_id("1000000BOBUSDTLONGNAME", T, "rev12345")
    assert len(cid) <= 36 and is_valid_client_id(cid)
    assert cid == make_client_id("1000000BOBUSDTLONGNAME", T, "rev12345")


@pytest.mark.parametrize("intent", ["", "Entry", "with space", "toolongintent"])
def test_bad_intent_is_refused(intent: str) -> None:
    with pytest.raises(ValueError):
        make_client_id("XRPUSDT", T, intent)


def test_binance_rule() -> None:
    assert is_valid_client_id("a" * 36) and not is_valid_client_id("a" * 37)
    assert not is_valid_client_id("bad id") and not is_valid_client_id("")
