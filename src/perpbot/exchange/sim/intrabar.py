"""The intra-bar walk: which triggers a candle fires, in which order and at which price.

Rules (what ``MatchingEngine.process_bar`` does after funding)
--------------------------------------------------------------
1. Gap at the open: every trigger (conditional or liquidation) already beyond ``open[i]`` fires
   at the open (fill = open ± slippage; liquidation at LP), in the order in which a continuous
   move from the previous close to the open would have crossed them (nearest to the previous
   close first; on a tie conditional orders before liquidation, then by algo id). A stop that
   gaps past LP therefore fills at the open and realises its whole loss (not capped at the
   isolated margin) — the pessimistic reading of a gap.
2. Inside the bar the price visits four points and every trigger crossed between two points
   fires at its trigger price (± slippage), in crossing order:

   * ``"pessimistic"`` (default): the adverse extreme first — long position ``O→L→H→C``, short
     ``O→H→L→C`` — so when the stop and the take-profit are both inside the bar the stop fills
     first (the same rule as the training labels); when flat the ``"ohlc"`` rule is used.
   * ``"ohlc"``: a bar that closes at or above its open went down first (``O→L→H→C``); a bar
     that closes below its open went up first (``O→H→L→C``).

   Liquidation is a trigger like the others, so it precedes the stop only when LP lies between
   the open and the stop along that path.

Trigger rule (last-price triggers): STOP_MARKET BUY and TAKE_PROFIT_MARKET SELL fire when price ≥
trigger; STOP_MARKET SELL and TAKE_PROFIT_MARKET BUY fire when price ≤ trigger (``Algo.up``).

Separate from the engine because the ordering rules are the part of the model most worth reading
on their own, and because they only *find* the next trigger: firing it (a fill, a liquidation) is
the clearing's job, handed in as ``fire``.
"""

from __future__ import annotations

from collections.abc import Callable

from perpbot.exchange.sim.book import INF, Algo, Book

LIQ = "LIQ"  # the liquidation "trigger" of a book's position

Hit = Algo | str
Fire = Callable[[Book, Hit, float], None]


def path(b: Book, pessimistic: bool, o: float, h: float, lo: float, c: float) -> tuple[float, float, float]:
    """The three points visited after the open (``pessimistic``: the account's setting)."""
    pessimistic = pessimistic and b.qty != 0.0
    down_first = (b.qty > 0.0) if pessimistic else (c >= o)
    return (lo, h, c) if down_first else (h, lo, c)


def walk(b: Book, i: int, prev: int, pessimistic: bool, fire: Fire) -> None:
    """Fire, in order, every trigger bar ``i`` of ``b`` meets (``prev``: the last bar processed)."""
    o, h, lo, c = b.open[i], b.high[i], b.low[i], b.close[i]
    ref = b.close[prev] if prev >= 0 else o
    # Gap: triggers already beyond the open fire at the open, nearest to the previous close first.
    while True:
        hit = gapped(b, o, ref)
        if hit is None:
            break
        fire(b, hit, o)
    cur = o
    for end in path(b, pessimistic, o, h, lo, c):
        while True:
            hit, at = crossed(b, cur, end)
            if hit is None:
                break
            fire(b, hit, at)
            cur = at
        cur = end


def gapped(b: Book, o: float, ref: float) -> Hit | None:
    """The trigger already beyond the open ``o`` nearest to the previous close ``ref``, if any."""
    best: Hit | None = None
    best_key: tuple[float, int, int] = (INF, 0, 0)
    for a in b.algos.values():
        if (a.trigger <= o) if a.up else (a.trigger >= o):
            key = (abs(a.trigger - ref), 0, a.algo_id)
            if key < best_key:
                best, best_key = a, key
    if b.qty != 0.0 and b.liq > 0.0 and ((b.qty > 0 and b.liq >= o) or (b.qty < 0 and b.liq <= o)):
        key = (abs(b.liq - ref), 1, 0)
        if key < best_key:
            best = LIQ
    return best


def crossed(b: Book, cur: float, end: float) -> tuple[Hit | None, float]:
    """The first trigger met moving from ``cur`` to ``end`` and the price where it fires."""
    rising = end >= cur
    best: Hit | None = None
    best_key: tuple[float, int, int] = (INF, 0, 0)
    best_at = cur
    levels: list[tuple[Hit, float, bool, int, int]] = [
        (a, a.trigger, a.up, 0, a.algo_id) for a in b.algos.values()
    ]
    if b.qty != 0.0 and b.liq > 0.0:
        levels.append((LIQ, b.liq, b.qty < 0.0, 1, 0))
    for obj, lvl, up, pri, oid in levels:
        if up:
            if lvl <= cur:
                d, at = 0.0, cur
            elif rising and lvl <= end:
                d, at = lvl - cur, lvl
            else:
                continue
        else:
            if lvl >= cur:
                d, at = 0.0, cur
            elif not rising and lvl >= end:
                d, at = cur - lvl, lvl
            else:
                continue
        key = (d, pri, oid)
        if key < best_key:
            best, best_key, best_at = obj, key, at
    return best, best_at
