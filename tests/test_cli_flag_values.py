"""``cli.flag_values``: numeric and date flags parsed with the one-line error contract."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from perpbot.cli.flag_values import parse_number, parse_utc
from perpbot.errors import ConfigError


def test_a_number_inside_its_bounds_is_returned_and_an_absent_one_is_none() -> None:
    assert parse_number("0.0005", "--taker-fee", low=0.0, high=0.01) == 0.0005
    assert parse_number("0", "--taker-fee", low=0.0, high=0.01) == 0.0
    assert parse_number(None, "--taker-fee", low=0.0, high=0.01) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("x", "--balance='x': not a number"),
        ("0", "--balance='0': must be in (0, 1e+12]"),
        ("nan", "--balance='nan': must be in (0, 1e+12]"),
        ("inf", "--balance='inf': must be in (0, 1e+12]"),
    ],
)
def test_a_bad_number_is_one_line_naming_the_flag(raw: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_number(raw, "--balance", low=0.0, high=1e12, low_inclusive=False)
    assert str(err.value) == message


def test_dates_are_utc_whatever_their_spelling() -> None:
    want = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert parse_utc("2025-06-01T12:00", "--from") == want  # naive: UTC
    assert parse_utc("2025-06-01T12:00Z", "--from") == want
    assert parse_utc("2025-06-01T14:00+02:00", "--from") == want
    assert parse_utc(" ", "--from") is None and parse_utc(None, "--from") is None
    with pytest.raises(ConfigError, match=r"--to='June 1': not a date"):
        parse_utc("June 1", "--to")
