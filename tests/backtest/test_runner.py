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
    build_timeline,
    derived_filters,
    prepare_series,
    run_backtest,
)
from perpbot.config import AppConfig
from perpbot.data.schema import BAR_MS
from perpbot.domain.types import ClosedTrade, CloseReason, Side
from perpbot.errors import ConfigError, DataError
from perpbot.ml.features import FEATURE_WARMUP_BARS, build_feature_frame, context_from_row, contexts_arrays

from .conftest import (
    SYMS3,
    SYMS4,
    exchange_violations,
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
    assert not risk_violations(res.trades)
    assert not exchange_violations(res.trades, res.filters)


def test_missing_model_passes_everything_and_says_so(
    tmp_path: Path, markets4: dict[str, pd.DataFrame], loose_run: BacktestResult
) -> None:
    cfg = BacktestConfig(symbols=SYMS4, markets=markets4, use_ml=True, model_dir=tmp_path / "none")
    res = run(cfg, loose_config(SYMS4))
    assert res.fingerprint == loose_run.fingerprint
    assert sum("no ML model" in w for w in res.warnings) == len(SYMS4)


# --------------------------------------------------------------------------- trade rules


def test_every_trade_obeys_the_risk_rules(loose_run: BacktestResult) -> None:
    trades = loose_run.trades
    assert not risk_violations(trades)
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
    # The simulator's wallet moves exactly by the recorded trades (nothing leaks between them).
    assert m.portfolio.end_equity == pytest.approx(1000.0 + m.portfolio.net_pnl)
    assert loose_run.stats.candles == sum(len(f) for f in loose_run.config.markets.values())  # type: ignore[union-attr]
    assert loose_run.stats.bot_errors == 0


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_data_three_symbols(real_data_dir: Path) -> None:
    cfg = BacktestConfig(symbols=("XRPUSDT", "TRXUSDT", "DOGEUSDT"), data_dir=real_data_dir, use_ml=False)
    res = run(cfg, AppConfig())
    assert res.stats.candles > 100_000
    assert res.stats.bot_errors == 0
    assert res.stats.close_timeouts == 0
    assert len(res.trades) > 0
    assert not risk_violations(res.trades)
    assert not exchange_violations(res.trades, res.filters)
    assert res.metrics.portfolio.net_pnl == pytest.approx(sum(t.net_pnl for t in res.trades))
    assert set(res.closes) == set(cfg.symbols)
