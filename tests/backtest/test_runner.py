"""The backtest runner: determinism, pinned fingerprints, the risk and exchange rules on every trade,
time alignment, end-of-data closes, and the real-data tier."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perpbot.backtest.runner import (
    BacktestConfig,
    BacktestResult,
    _drive,
    build_timeline,
    prepare_series,
    run_backtest,
    training_overlap,
)
from perpbot.config import AppConfig
from perpbot.data.schema import BAR_MS
from perpbot.domain.types import ClosedTrade, CloseReason, Side
from perpbot.errors import ConfigError, DataError
from perpbot.exchange.known_filters import derived_filters
from perpbot.ml.features import FEATURE_WARMUP_BARS, build_feature_frame, context_from_row, contexts_arrays

from .conftest import (
    SYMS3,
    SYMS4,
    daily_limit_violations,
    exchange_violations,
    kill_switch_violations,
    loose_config,
    risk_violations,
    tiny_onnx_model,
)

# Pinned trade-list fingerprints on the synthetic market of ``markets4`` (60 days, seed 11). A
# change means the trades changed: check whether that was intended (bot, simulator, features,
# signal or sizing change) before updating the pin.
PIN_NO_ML_DEFAULT = "fa64c4976ec55d6232d55636f995c15b1ad8ca4c44026c8225fc05f3b73518ed"
PIN_NO_ML_LOOSE = "d613da45b537d2499e4b83a89e7656ed7f0fbc42034462eeb3ee34ee82ae2be2"
PIN_TINY_MODEL = "9fbb8ddb500c9b612167084ba322f732d1d0858cf5cf2c66117a8ac90e1731fa"


def run(cfg: BacktestConfig, app: AppConfig) -> BacktestResult:
    return asyncio.run(run_backtest(cfg, app))


@pytest.fixture(scope="module")
def loose_run(markets4: dict[str, pd.DataFrame]) -> BacktestResult:
    return run(BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=False), loose_config(SYMS4))


# --------------------------------------------------------------------------- determinism and pins


def test_same_inputs_give_the_same_trades(
    markets4: dict[str, pd.DataFrame], loose_run: BacktestResult
) -> None:
    again = run(BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=False), loose_config(SYMS4))
    assert again.trades == loose_run.trades
    assert again.fingerprint == loose_run.fingerprint
    assert len(loose_run.trades) >= 50


def test_pinned_fingerprint_default_parameters(markets4: dict[str, pd.DataFrame]) -> None:
    res = run(BacktestConfig(symbols=SYMS3, markets=markets4, use_ml=False), AppConfig(symbols=SYMS3))
    assert len(res.trades) > 0
    assert res.fingerprint == PIN_NO_ML_DEFAULT


def test_pinned_fingerprint_loose_parameters(loose_run: BacktestResult) -> None:
    assert loose_run.fingerprint == PIN_NO_ML_LOOSE


def test_a_model_without_training_window_is_reported_not_silently_trusted(
    tmp_path: Path, markets4: dict[str, pd.DataFrame]
) -> None:
    """A model whose metadata has no training window cannot be checked for overlap with the
    backtest: the run must say so instead of presenting ML-on figures as out of sample."""
    for sym in SYMS3:
        tiny_onnx_model(tmp_path / sym.lower())  # hand-built: no training window recorded
    cfg = BacktestConfig(symbols=SYMS3, markets=markets4, use_ml=True, model_dir=tmp_path)
    res = run(cfg, AppConfig(symbols=SYMS3))
    unknown = [w for w in res.warnings if "records no training window" in w]
    assert sorted(w.split(":")[0] for w in unknown) == sorted(SYMS3)
    assert res.in_sample == {}
    no_ml = run(BacktestConfig(symbols=SYMS3, markets=markets4, use_ml=False), AppConfig(symbols=SYMS3))
    assert not any("records no training window" in w for w in no_ml.warnings)


def test_pinned_fingerprint_with_a_tiny_onnx_model(
    tmp_path: Path, markets4: dict[str, pd.DataFrame], loose_run: BacktestResult
) -> None:
    for sym in SYMS4:
        tiny_onnx_model(tmp_path / sym.lower())
    cfg = BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=True, model_dir=tmp_path)
    res = run(cfg, loose_config(SYMS4))
    assert res.models == dict.fromkeys(SYMS4, "lgbm")
    assert not res.warnings or all("no ML model" not in w for w in res.warnings)
    # The filter rejects part of the signals, so the trade list differs from the unfiltered one.
    assert res.fingerprint != loose_run.fingerprint
    assert len(res.trades) > 0
    assert res.fingerprint == PIN_TINY_MODEL
    assert_obeys_every_rule(res)


def test_missing_model_passes_everything_and_says_so(
    tmp_path: Path, markets4: dict[str, pd.DataFrame], loose_run: BacktestResult
) -> None:
    cfg = BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=True, model_dir=tmp_path / "none")
    res = run(cfg, loose_config(SYMS4))
    assert res.fingerprint == loose_run.fingerprint
    assert sum("no ML model" in w for w in res.warnings) == len(SYMS4)


# --------------------------------------------------------------------------- trade rules


def assert_obeys_every_rule(res: BacktestResult) -> None:
    """Position limits, the daily loss limit, the kill switch and the exchange's filters."""
    assert not risk_violations(res.trades)
    assert not daily_limit_violations(res.trades, res.config.initial_balance)
    assert not kill_switch_violations(res.trades, res.kill_switch_trips)
    assert not exchange_violations(res.trades, res.filters)


def test_every_trade_obeys_the_risk_rules(loose_run: BacktestResult) -> None:
    trades = loose_run.trades
    assert_obeys_every_rule(loose_run)
    # The limits are reached, so the check above is not vacuous.
    assert _max_concurrency(trades) == 3
    assert _max_same_direction(trades) == 2


def test_every_trade_obeys_the_exchange_rules(loose_run: BacktestResult) -> None:
    assert not exchange_violations(loose_run.trades, loose_run.filters)
    for t in loose_run.trades:
        assert t.entry_time_ms % BAR_MS == 0  # entries happen at a candle close
        assert t.exit_time_ms > t.entry_time_ms


def test_the_rule_checkers_catch_breaches() -> None:
    def tr(sym: str, side: Side, a: int, b: int, qty: float = 10.0, px: float = 1.0) -> ClosedTrade:
        return ClosedTrade(sym, side, a, b, px, px, qty, 0.0, 0.0, 0.0, 0.0, CloseReason.TP)

    three_long = [tr("A", Side.LONG, 0, 10), tr("B", Side.LONG, 1, 10), tr("C", Side.LONG, 2, 10)]
    assert any("LONG positions open" in v for v in risk_violations(three_long))
    four = [
        tr("A", Side.LONG, 0, 9),
        tr("B", Side.LONG, 1, 9),
        tr("C", Side.SHORT, 2, 9),
        tr("D", Side.SHORT, 3, 9),
    ]
    assert any("4 positions open" in v for v in risk_violations(four))
    same_symbol = [tr("A", Side.LONG, 0, 10), tr("A", Side.SHORT, 5, 12)]
    assert any("second position" in v for v in risk_violations(same_symbol))
    back_to_back = [tr("A", Side.LONG, 0, 10), tr("A", Side.SHORT, 10, 12)]  # a reverse: allowed
    assert not risk_violations(back_to_back)
    # 5 % of 1000: A's loss at t=5 blocks later entries that UTC day, not ones at that very time,
    # until a winner lifts the day's PnL above the limit again.
    loss = dataclasses.replace(tr("A", Side.LONG, 0, 5), realized_pnl=-50.0)
    day = [loss, tr("B", Side.LONG, 5, 9), tr("C", Side.LONG, 6, 9)]
    assert [v.split(":")[0] for v in daily_limit_violations(day, 1000.0)] == ["trade 2 C"]
    assert not daily_limit_violations(day[:2], 1000.0)
    assert not daily_limit_violations([loss, tr("C", Side.LONG, 86_400_000, 86_400_009)], 1000.0)
    win = dataclasses.replace(tr("D", Side.SHORT, 1, 7), realized_pnl=20.0)
    assert not daily_limit_violations([loss, win, tr("C", Side.LONG, 7, 9)], 1000.0)
    assert daily_limit_violations([loss, win, tr("C", Side.LONG, 6, 9)], 1000.0)
    trips = [{"symbol": "A", "time_ms": 10}]
    assert kill_switch_violations([tr("A", Side.LONG, 10, 12)], trips)
    assert not kill_switch_violations([tr("A", Side.LONG, 0, 10), tr("B", Side.LONG, 11, 12)], trips)
    f = {"A": derived_filters("XRPUSDT", 1.0)}
    assert exchange_violations([tr("A", Side.LONG, 0, 1, qty=10.05)], f)
    assert exchange_violations([tr("A", Side.LONG, 0, 1, qty=4.0)], f)  # notional 4 < 5


def _max_concurrency(trades: list[ClosedTrade]) -> int:
    ev = sorted([(t.entry_time_ms, 1) for t in trades] + [(t.exit_time_ms, -1) for t in trades])
    cur = best = 0
    for _, d in ev:
        cur += d
        best = max(best, cur)
    return best


def _max_same_direction(trades: list[ClosedTrade]) -> int:
    return max(_max_concurrency([t for t in trades if t.side is side]) for side in Side)


# --------------------------------------------------------------------------- time and windows


def test_fast_contexts_equal_context_from_row(markets4: dict[str, pd.DataFrame]) -> None:
    app = AppConfig(symbols=SYMS3)
    market = markets4["XRPUSDT"]
    s = prepare_series("XRPUSDT", market, app, None, None)
    assert s is not None
    arrays = contexts_arrays(build_feature_frame(market, app.params_for("XRPUSDT")))
    rows = [
        FEATURE_WARMUP_BARS,
        *np.flatnonzero(np.array([x is not None for x in s.side]))[:20].tolist(),
        s.n - 1,
    ]
    for i in rows:
        want = context_from_row("XRPUSDT", int(arrays.open_time_ms[i]), arrays.values[i], arrays.index)
        got = s.context(i)
        for f in dataclasses.fields(want):
            a, b = getattr(got, f.name), getattr(want, f.name)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)
            elif isinstance(a, float) and np.isnan(a):
                assert np.isnan(b)
            else:
                assert a == b, f.name
    assert not s.ready[: FEATURE_WARMUP_BARS - 1].any()
    assert s.ready[FEATURE_WARMUP_BARS:].all()
    with pytest.raises(ValueError):
        s.features[0, 0] = 1.0  # contexts hand out views of a read-only matrix


def test_timeline_is_the_union_of_open_times(markets4: dict[str, pd.DataFrame]) -> None:
    app = AppConfig(symbols=SYMS3)
    a = markets4["XRPUSDT"].iloc[:100]
    b = markets4["TRXUSDT"].iloc[50:150].drop(markets4["TRXUSDT"].index[60:70])
    sa = prepare_series("XRPUSDT", a, app, None, None)
    sb = prepare_series("TRXUSDT", b, app, None, None)
    assert sa is not None and sb is not None
    tl = build_timeline([sa, sb])
    assert tl.open_time_ms.size == 150
    assert np.all(np.diff(tl.open_time_ms) == BAR_MS)
    assert tl.steps[0] == ((0, 0),)
    assert tl.steps[50] == ((0, 50), (1, 0))
    assert tl.steps[65] == ((0, 65),)  # TRX has no candle here: no step for it
    assert tl.steps[149] == ((1, 89),)


def test_every_candle_of_an_open_time_before_time_advances(markets4: dict[str, pd.DataFrame]) -> None:
    """The hot loop's order, recorded with fakes: per open time, all bars happen, then the clock
    moves to the close and every bot sees its candle; a missing candle is simply skipped."""
    app = AppConfig(symbols=SYMS3)
    a = markets4["XRPUSDT"].iloc[:120]
    b = markets4["TRXUSDT"].iloc[:120].drop(markets4["TRXUSDT"].index[70:75])
    series = [prepare_series(s, m, app, None, None) for s, m in (("XRPUSDT", a), ("TRXUSDT", b))]
    assert all(x is not None for x in series)
    log: list[tuple] = []

    class Clock:
        now = 0

        def set(self, ms: int) -> None:
            assert ms >= self.now
            self.now = ms

    clock = Clock()

    class Engine:
        has_events = False

        def process_bar(self, sym: str, i: int) -> None:
            log.append(("bar", sym, i, clock.now))

    class Exchange:
        async def drain(self) -> None:
            log.append(("drain",))

    class Bot:
        in_position = False
        has_background = False

        def __init__(self, sym: str) -> None:
            self.sym = sym

        async def on_candle(self, ctx: object) -> None:
            log.append(("candle", self.sym, ctx.open_time_ms, clock.now))  # type: ignore[attr-defined]

        async def reconcile(self) -> None:
            log.append(("reconcile", self.sym, clock.now))

        async def wait_background(self) -> None:
            return None

    tl = build_timeline(series)  # type: ignore[arg-type]
    asyncio.run(
        _drive(series, tl, Engine(), Exchange(), clock, [Bot("XRPUSDT"), Bot("TRXUSDT")], None, 235)  # type: ignore[arg-type]
    )
    names = ("XRPUSDT", "TRXUSDT")
    t = tl.open_time_ms.tolist()
    i = 0
    for k, step in enumerate(tl.steps):
        bars = log[i : i + len(step)]
        i += len(step)
        assert [(x[0], x[1], x[2]) for x in bars] == [("bar", names[si], row) for si, row in step]
        assert all(x[3] == t[k] + BAR_MS for x in bars)  # handled at the stamp of the bar's close
        rest = []
        while i < len(log) and log[i][0] != "bar":
            rest.append(log[i])
            i += 1
        want = [
            ("candle", names[si], t[k], t[k] + BAR_MS)  # each bot sees its candle at the close time
            for si, row in step
            if series[si].ready[row] and row != series[si].n - 1  # type: ignore[union-attr]
        ]
        assert [x for x in rest if x[0] == "candle"] == want
        if k == len(tl.steps) - 1:
            rest = rest[:-2]  # the run's final drains (before and after background work)
        # Issue 7 #14: a step spans 900 s ≥ the 300 s period, so every bot reconciles at every
        # step's close, after its candles, and the reconciliation's events are delivered.
        assert rest[-3:] == [
            ("reconcile", "XRPUSDT", t[k] + BAR_MS),
            ("reconcile", "TRXUSDT", t[k] + BAR_MS),
            ("drain",),
        ]
        assert rest[-4] == ("drain",)  # the candles' events delivered before reconciling
    assert i == len(log)
    assert len(tl.steps) == 120 and all(len(st) == 1 for st in tl.steps[70:75])


def test_window_bounds_and_end_of_data_close(
    markets4: dict[str, pd.DataFrame], loose_run: BacktestResult
) -> None:
    # Cut the run in the middle of a long trade: it must end as END_OF_DATA at the window's last close.
    long_trades = sorted(loose_run.trades, key=lambda t: t.exit_time_ms - t.entry_time_ms)
    target = long_trades[-1]
    cut = target.entry_time_ms + ((target.exit_time_ms - target.entry_time_ms) // 2 // BAR_MS) * BAR_MS
    start = datetime.fromtimestamp(int(markets4["XRPUSDT"].index.asi8[0]) / 1000 + 86_400, tz=UTC)
    end = datetime.fromtimestamp(cut / 1000, tz=UTC)
    cfg = BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=False, start=start, end=end)
    res = run(cfg, loose_config(SYMS4))
    assert res.start_ms == int(start.timestamp() * 1000)  # inclusive
    assert res.end_ms == cut  # exclusive on open times: the last candle opens at cut - 15 min
    eod = [t for t in res.trades if t.reason is CloseReason.END_OF_DATA]
    assert eod, "a position open at the end must be closed as END_OF_DATA"
    for t in eod:
        assert t.exit_time_ms == cut
        assert t.exit_fee > 0
    assert res.final_balance == pytest.approx(1000.0 + sum(t.net_pnl for t in res.trades), abs=1e-6)
    assert all(res.start_ms <= t.entry_time_ms and t.exit_time_ms <= res.end_ms for t in res.trades)
    assert not risk_violations(res.trades)


def test_bad_inputs_are_one_line_errors(tmp_path: Path, markets4: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(DataError, match="no market data for XRPUSDT"):
        run(BacktestConfig(symbols=("XRPUSDT",), data_dir=tmp_path), AppConfig())
    with pytest.raises(ConfigError):
        BacktestConfig(symbols=("XRPUSDT", "XRPUSDT"))
    with pytest.raises(ConfigError):
        BacktestConfig(
            symbols=("XRPUSDT",), start=datetime(2025, 2, 1, tzinfo=UTC), end=datetime(2025, 1, 1, tzinfo=UTC)
        )
    journal = tmp_path / "j.sqlite"
    journal.write_bytes(b"")
    with pytest.raises(ConfigError, match="journal already exists"):
        run(BacktestConfig(symbols=SYMS3, markets=markets4, journal_path=journal), AppConfig())
    late = datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(DataError, match="no candle inside"):
        run(BacktestConfig(symbols=SYMS3, markets=markets4, start=late, use_ml=False), AppConfig())


def test_metrics_match_the_trades(loose_run: BacktestResult) -> None:
    m = loose_run.metrics
    assert m.portfolio.trades == len(loose_run.trades)
    assert m.portfolio.net_pnl == pytest.approx(sum(t.net_pnl for t in loose_run.trades))
    assert sum(x.trades for x in m.per_symbol.values()) == len(loose_run.trades)
    # The simulator's wallet moved exactly by the recorded trades: every fee, every funding payment
    # and every realised PnL is in some trade, none twice, and nothing is left open at the end.
    assert loose_run.final_balance == pytest.approx(1000.0 + m.portfolio.net_pnl, abs=1e-6)
    assert m.portfolio.end_equity == pytest.approx(loose_run.final_balance, abs=1e-6)
    assert m.portfolio.funding != 0.0  # funding was actually exercised
    assert loose_run.stats.candles == sum(len(f) for f in loose_run.config.markets.values())  # type: ignore[union-attr]
    assert loose_run.stats.bot_errors == 0


def test_in_sample_models_are_flagged() -> None:
    day = 86_400_000
    meta = {"training_window": {"start": "2025-01-01T00:00:00+00:00", "end": "2025-03-01T00:00:00+00:00"}}
    jan1 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
    mar1 = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp() * 1000)
    assert training_overlap(meta, mar1 - 10 * day, mar1 + 10 * day) is not None
    assert training_overlap(meta, jan1 - 10 * day, jan1 + day) is not None
    # The last sample's label reads 24 more bars: a window starting right after it still overlaps.
    assert training_overlap(meta, mar1 + 10 * BAR_MS, mar1 + day) is not None
    assert training_overlap(meta, mar1 + 25 * BAR_MS, mar1 + day) is None
    assert training_overlap(meta, jan1 - 10 * day, jan1) is None
    assert training_overlap({}, jan1, mar1) is None
    assert training_overlap({"training_window": {"start": None, "end": None}}, jan1, mar1) is None


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
@pytest.mark.parametrize("params", ["default", "loose"])
def test_real_data_three_symbols(real_data_dir: Path, params: str) -> None:
    """The three recorded symbols over their whole history through the real bots. The loose
    parameters make the limits bind (3 open, 2 per side, daily loss, kill switch), so the rule
    checks below are not vacuous; the default ones are what a user runs."""
    cfg = BacktestConfig(symbols=SYMS3, data_dir=real_data_dir, use_ml=False)
    res = run(cfg, AppConfig(symbols=SYMS3) if params == "default" else loose_config(SYMS3))
    assert res.stats.candles > 100_000
    assert res.stats.bot_errors == 0
    assert res.stats.close_timeouts == 0
    assert len(res.trades) > 0
    assert_obeys_every_rule(res)
    for t in res.trades:  # quantities on the real symbols' step grids (XRP 0.1, TRX/DOGE 1)
        assert t.quantity * 10 == pytest.approx(round(t.quantity * 10), abs=1e-9)
    assert res.final_balance == pytest.approx(1000.0 + sum(t.net_pnl for t in res.trades), abs=1e-6)
    assert set(res.closes) == set(cfg.symbols)
    if params == "loose":
        assert _max_concurrency(res.trades) == 3
        assert _max_same_direction(res.trades) == 2
        assert res.daily_limit_days > 0 and res.kill_switch_trips
