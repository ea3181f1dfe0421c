"""One trial: the real backtest (same bots, risk manager and simulator) with the trial's parameters,
cut into the anchored walk-forward windows of :mod:`perpbot.optimize.windows`.

``Evaluator`` is built once per symbol and worker process: it holds the market, the
parameter-independent cache (:mod:`perpbot.optimize.precompute`), the folds and the entry filter
(pass-through unless ``--ml``), so a trial costs one pass of the backtest loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perpbot.backtest.runner import BacktestConfig, make_entry_filter, run_backtest, training_overlap
from perpbot.config import AppConfig, SignalParams
from perpbot.domain.types import ClosedTrade
from perpbot.errors import ModelError
from perpbot.optimize.precompute import SymbolCache
from perpbot.optimize.scoring import score, summary
from perpbot.optimize.windows import Folds, TradeTable, daily_returns, is_mask, make_folds, oos_mask


@dataclass(frozen=True, slots=True)
class TrialOutcome:
    """What a trial measured; ``failed`` says why it does not count (too few trades)."""

    params: dict[str, float | int]
    oos_score: float
    is_score: float  # mean over folds of the in-sample windows' scores
    fold_is: list[float]
    fold_oos: list[float]
    oos_trades: int
    oos_daily: np.ndarray
    oos_summary: dict[str, float | int]
    failed: str | None = None
    fold_oos_trades: list[int] = field(default_factory=list)

    def user_attrs(self) -> dict[str, Any]:
        """JSON-able attributes stored with the Optuna trial (the report reads them back)."""
        return {
            "oos_score": self.oos_score,
            "is_score": self.is_score,
            "fold_is": self.fold_is,
            "fold_oos": self.fold_oos,
            "fold_oos_trades": self.fold_oos_trades,
            "oos_trades": self.oos_trades,
            "oos_daily": [float(x) for x in self.oos_daily],
            "oos_summary": self.oos_summary,
            "failed": self.failed,
        }


@dataclass(slots=True, eq=False)
class Evaluator:
    """Runs trials for one symbol (see the module docstring)."""

    symbol: str
    app_config: AppConfig
    cache: SymbolCache
    folds: Folds
    metric: str
    min_trades: int
    use_ml: bool = False
    model_dir: Path = Path("models")
    initial_balance: float = 1000.0
    _filter: Any = None

    @classmethod
    def build(
        cls,
        symbol: str,
        market: pd.DataFrame,
        app_config: AppConfig,
        *,
        folds: int,
        metric: str,
        min_trades: int,
        use_ml: bool = False,
        model_dir: Path = Path("models"),
        initial_balance: float = 1000.0,
    ) -> Evaluator:
        times = market.index.as_unit("ms").asi8.astype(np.int64)
        f = make_folds(symbol, times, folds)
        cache = SymbolCache.build(symbol, market)
        ev = cls(symbol, app_config, cache, f, metric, min_trades, use_ml, model_dir, initial_balance)
        if use_ml:
            ev._filter = make_entry_filter(ev._config(app_config.params_for(symbol)), app_config, symbol)
            if not ev._filter.has_model:
                raise ModelError(
                    f"--ml: no usable model for {symbol} in {model_dir} (train it first, or drop --ml)"
                )
        return ev

    @property
    def model_sha256(self) -> str | None:
        """The served model's ONNX hash (part of the study fingerprint with ``--ml``)."""
        meta = None if self._filter is None else self._filter.metadata
        return None if meta is None else str(meta.get("onnx_sha256"))

    def ml_in_sample(self) -> dict[str, str] | None:
        """The model's training window when it overlaps the out-of-sample span (then the ML-on
        scores are not out of sample for the filter, whatever the parameter windows say)."""
        if self._filter is None:
            return None
        return training_overlap(self._filter.metadata, self.folds.oos_start, self.folds.end)

    def _config(
        self,
        params: SignalParams,
        arrays: dict[str, np.ndarray] | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> BacktestConfig:
        sym = self.symbol
        return BacktestConfig(
            symbols=(sym,),
            model_dir=self.model_dir,
            start=None if start_ms is None else datetime.fromtimestamp(start_ms / 1000, tz=UTC),
            end=None if end_ms is None else datetime.fromtimestamp(end_ms / 1000, tz=UTC),
            use_ml=self.use_ml,
            initial_balance=self.initial_balance,
            markets={sym: self.cache.market},
            entry_filters=None if self._filter is None else {sym: self._filter},
            symbol_filters={sym: self.cache.filters},
            feature_arrays={sym: self.cache.arrays(params) if arrays is None else arrays},
        )

    def app_for(self, params: SignalParams) -> AppConfig:
        app = self.app_config.with_symbols([self.symbol])
        return replace(app, symbol_params={**dict(app.symbol_params), self.symbol: params})

    async def _run_blocks(self, params: SignalParams) -> list[ClosedTrade]:
        arrays = self.cache.arrays(params)
        app = self.app_for(params)
        out: list[ClosedTrade] = []
        b = self.folds.bounds
        for j in range(len(b) - 1):
            result = await run_backtest(self._config(params, arrays, b[j], b[j + 1]), app)
            out.extend(result.trades)
        return out

    def trades(self, params: SignalParams) -> TradeTable:
        """The trial's trades: one fresh backtest per block (the windows module docstring)."""
        tr = asyncio.run(self._run_blocks(params))
        return TradeTable(
            entry_ms=np.fromiter((t.entry_time_ms for t in tr), dtype=np.int64, count=len(tr)),
            exit_ms=np.fromiter((t.exit_time_ms for t in tr), dtype=np.int64, count=len(tr)),
            net=np.fromiter((t.net_pnl for t in tr), dtype=np.float64, count=len(tr)),
        )

    def evaluate(self, values: dict[str, float | int], params: SignalParams) -> TrialOutcome:
        """Score ``params`` on every window; failed when out-of-sample trades < ``min_trades``."""
        table = self.trades(params)
        f, base, m = self.folds, self.initial_balance, self.metric
        fold_is, fold_oos, fold_n = [], [], []
        for k in range(1, f.k + 1):
            im = is_mask(table, f, k)
            fold_is.append(
                score(m, table.net[im], daily_returns(table, im, f.bounds[0], f.is_end(k), base), base)
            )
            om = oos_mask(table, f, k)
            lo, hi = f.oos(k)
            fold_oos.append(score(m, table.net[om], daily_returns(table, om, lo, hi, base), base))
            fold_n.append(int(om.sum()))
        om = oos_mask(table, f)
        daily = daily_returns(table, om, f.oos_start, f.end, base)
        n_oos = int(om.sum())
        failed = None
        if n_oos < self.min_trades:
            failed = f"{n_oos} out-of-sample trades < minimum {self.min_trades}"
        return TrialOutcome(
            params=dict(values),
            oos_score=score(m, table.net[om], daily, base),
            is_score=float(np.mean(fold_is)),
            fold_is=fold_is,
            fold_oos=fold_oos,
            oos_trades=n_oos,
            oos_daily=daily,
            oos_summary=summary(table.net[om], daily),
            failed=failed,
            fold_oos_trades=fold_n,
        )
