"""``backtest.loop._asleep``: which bots the skip-ahead may leave out of a step. A bot watching
only for late funding rows sleeps while neither its symbol's income rows nor its trades changed
since its last reconcile pass read them; anything else that could matter keeps it awake."""

from __future__ import annotations

from dataclasses import dataclass, field

from perpbot.backtest.loop import _asleep, _pass_key


@dataclass
class Bot:
    at_rest: bool = False
    watching_funding_only: bool = True
    closed_trades: list[object] = field(default_factory=lambda: [object()])


@dataclass
class Engine:
    is_quiet: bool = True
    incomes: int = 4

    def quiet(self, symbol: str) -> bool:
        return self.is_quiet

    def income_count(self, symbol: str) -> int:
        return self.incomes


def test_a_bot_at_rest_on_a_quiet_book_sleeps_whatever_was_seen() -> None:
    assert _asleep(Bot(at_rest=True, watching_funding_only=False), Engine(), "X", None)


def test_a_book_that_is_not_quiet_keeps_any_bot_awake() -> None:
    assert not _asleep(Bot(at_rest=True, watching_funding_only=False), Engine(is_quiet=False), "X", None)
    bot, engine = Bot(), Engine(is_quiet=False)
    assert not _asleep(bot, engine, "X", _pass_key(bot, engine, "X"))


def test_a_watching_bot_sleeps_only_after_a_pass_read_the_same_rows_and_trades() -> None:
    bot, engine = Bot(), Engine()
    assert not _asleep(bot, engine, "X", None)  # no pass read anything yet
    seen = _pass_key(bot, engine, "X")
    assert _asleep(bot, engine, "X", seen)
    engine.incomes += 1  # a new income row: the next pass may find late funding
    assert not _asleep(bot, engine, "X", seen)
    engine.incomes -= 1
    bot.closed_trades.append(object())  # a new booked trade: a new watch
    assert not _asleep(bot, engine, "X", seen)


def test_a_bot_with_other_open_matters_stays_awake() -> None:
    bot, engine = Bot(watching_funding_only=False), Engine()
    assert not _asleep(bot, engine, "X", _pass_key(bot, engine, "X"))
