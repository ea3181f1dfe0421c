"""SPEC §8.3 step 7 with a position read handed over by the runtime: when the bot's own state
changed while the read was out, the answer may predate that change and is read again, unless
both already agree that the symbol is flat (nothing can be stale then, and an entry right after
an exit booked on the same candle saves a round trip)."""

from __future__ import annotations

from perpbot.domain.types import Position
from perpbot.exchange.sim.adapter import SimExchange

from .factories import BAR, SYM, ctx_at, flat
from .harness import LONG, SHORT, World
from .test_bot_hostile import covered

BAR_DOWN = (100.0, 100.0, 90.0, 95.0)  # through the long's stop-loss


class CountingReads(SimExchange):
    """The simulated exchange, counting position reads."""

    reads = 0

    async def position(self, symbol: str) -> Position | None:
        type(self).reads += 1
        return await super().position(symbol)


async def _long_then_stopped_while_the_read_is_out(answer_after: bool) -> tuple[World, int]:
    CountingReads.reads = 0
    w = World([*flat(100, 2), BAR_DOWN, *flat(95, 2)], exchange_cls=CountingReads, base=100_000.0)
    await w.start()
    await w.run({1: LONG}, until=1)
    assert w.bot.state.side is LONG
    w.i += 1
    i = w.i
    w.clock.set(int(w.t[i]) + BAR)

    async def handed_over() -> Position | None:
        before = await w.ex.position(SYM) if not answer_after else None
        w.ex.process_bar(SYM, i)  # the stop-loss fires at the venue while the read is out …
        await w.ex.drain()  # … and its close is booked before the answer is handled
        return before if not answer_after else await w.ex.position(SYM)

    reads = CountingReads.reads
    await w.bot.on_candle(ctx_at(i, 95.0, SHORT), position=handed_over())
    await w.bot.wait_background()
    return w, CountingReads.reads - reads


async def test_a_flat_answer_after_an_exit_booked_meanwhile_is_used_as_it_is() -> None:
    w, reads = await _long_then_stopped_while_the_read_is_out(answer_after=True)
    assert [t.reason.value for t in w.bot.closed_trades] == ["SL"]
    assert reads == 1  # the handed-over read only: no second round trip
    assert w.bot.state.side is SHORT and covered(w)


async def test_an_open_answer_that_predates_the_exit_is_read_again() -> None:
    w, reads = await _long_then_stopped_while_the_read_is_out(answer_after=False)
    assert [t.reason.value for t in w.bot.closed_trades] == ["SL"]  # no phantom re-adoption
    assert reads == 2  # the stale "LONG" answer, then a fresh read
    assert w.bot.state.side is SHORT and covered(w)


async def _stopped_before_the_candle_is_decided(stale_answer: bool) -> tuple[World, int]:
    """The runtime started the read while the bot was LONG; the stop-loss was booked before
    ``on_candle`` (the job waited for BTC/ETH meanwhile). The read is handed over with the state
    it started from."""
    CountingReads.reads = 0
    w = World([*flat(100, 2), BAR_DOWN, *flat(95, 2)], exchange_cls=CountingReads, base=100_000.0)
    await w.start()
    await w.run({1: LONG}, until=1)
    started = w.bot.state
    snapshot = await w.ex.position(SYM)  # "LONG", as the venue said when the read left
    w.i += 1
    i = w.i
    w.clock.set(int(w.t[i]) + BAR)
    w.ex.process_bar(SYM, i)
    await w.ex.drain()
    assert w.bot.state.side is None  # booked before the candle is decided

    async def handed_over() -> Position | None:
        return snapshot if stale_answer else None

    reads = CountingReads.reads
    await w.bot.on_candle(ctx_at(i, 95.0, SHORT), position=handed_over(), read_since=started)
    await w.bot.wait_background()
    return w, CountingReads.reads - reads


async def test_a_stale_open_answer_handed_over_with_an_older_state_is_read_again() -> None:
    w, reads = await _stopped_before_the_candle_is_decided(stale_answer=True)
    assert [t.reason.value for t in w.bot.closed_trades] == ["SL"]  # not re-adopted
    assert reads == 1 and w.bot.state.side is SHORT and covered(w)


async def test_a_flat_answer_handed_over_with_an_older_state_is_used_as_it_is() -> None:
    w, reads = await _stopped_before_the_candle_is_decided(stale_answer=False)
    assert reads == 0 and w.bot.state.side is SHORT and covered(w)
