"""Training samples for the entry filter (SPEC §5), built once per symbol and shared by training,
walk-forward reporting and tuning.

Samples
-------
* Every *eligible* LONG/SHORT row of the rule signal (``source = "signal"``), labelled with the
  barrier rule of :mod:`perpbot.ml.labels` using the symbol's own ``ATR_SL_MULT``/``ATR_TP_MULT``.
  Eligible: ``warmup ≤ i < n − lookahead``, all non-optional features finite (the four
  OI/funding features may be NaN: the real files carry no OI history), and a positive ATR.
* HOLD negatives (``source = "hold_negative"``): ``min(#eligible HOLD rows, k·#signals)`` rows
  drawn without replacement by a seeded generator, sorted, label 0, each with a random side from
  the same generator.

The HOLD-negative leak and how it is handled (SPEC §13, "HOLD negatives get label 0 by
construction, so ``signal_strength``/``side`` largely encode the label")
-------------------------------------------------------------------------------------------
At the design point HOLD negatives carried ``signal_strength = 0``, a value no served row ever
has, so the model could learn "strength 0 ⇒ label 0" and look good on a validation set that
contained those rows. Two changes remove that:

1. Each HOLD negative gets the **real rule score of its random side** (``long_score`` or
   ``short_score`` of that bar) as ``signal_strength``, i.e. the feature is computed exactly as the
   live builder computes it for a row of that side. HOLD rows still tend to score lower than
   signals — that is a real property of the data, not an artefact of the sampler.
2. **Every metric is reported on signal rows only** (``Dataset.is_signal``): the model is only
   ever asked about rows where the rule fired, so that is the population whose ranking matters.
   HOLD negatives are extra training material, never evaluation material; balancing
   (:func:`stratified_undersample`) caps how many of them reach the fit.

Weights
-------
``w_j = exp(d·j/(n−1))`` over samples in time order, normalised to mean 1 (``d`` =
``TIME_WEIGHT_DECAY`` for training, 0 for tuning): recent market behaviour counts more, and the
mean-1 normalisation keeps LightGBM's ``min_child_samples``-style thresholds meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from perpbot.config import SignalParams
from perpbot.data.schema import BAR_MS
from perpbot.errors import InsufficientDataError
from perpbot.ml.labels import LOOKAHEAD, barrier_labels

WARMUP = 60
MIN_SAMPLES = 200
SOURCE_SIGNAL = "signal"
SOURCE_HOLD = "hold_negative"


@dataclass(frozen=True)
class Dataset:
    """Samples in time order (one per bar at most). Arrays are aligned on axis 0.

    ``bar_index`` is the row position in the market frame, ``label_end_bar = bar_index +
    lookahead`` the last bar the label may depend on (used for purging; applied to HOLD negatives
    too, whose features are still time-local, so the rule stays uniform and conservative).
    ``side`` follows the feature convention: 1 LONG, 0 SHORT.
    """

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    bar_index: np.ndarray
    time_ms: np.ndarray
    source: np.ndarray
    side: np.ndarray
    label_end_bar: np.ndarray
    feature_cols: tuple[str, ...]
    symbol: str = ""
    lookahead: int = LOOKAHEAD
    n_bars: int = 0
    info: dict[str, float | int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def is_signal(self) -> np.ndarray:
        """Mask of rule-signal rows, the only rows metrics are computed on."""
        return self.source == SOURCE_SIGNAL

    @property
    def n_signals(self) -> int:
        return int(self.is_signal.sum())

    @property
    def label_end_time_ms(self) -> np.ndarray:
        """Open time of each sample's last label bar (the market has no gaps, SPEC data schema)."""
        return self.time_ms + self.lookahead * BAR_MS

    def counts(self) -> dict[str, int]:
        sig = self.is_signal
        return {
            "samples": len(self),
            "signals": int(sig.sum()),
            "signal_positives": int(self.y[sig].sum()),
            "hold_negatives": int((~sig).sum()),
            "bars": self.n_bars,
        }


def time_decay_weights(n: int, decay: float) -> np.ndarray:
    """``exp(d·j/(n−1))`` for j = 0 … n−1, normalised to mean 1 (all ones when n ≤ 1 or d = 0)."""
    if n <= 0:
        return np.zeros(0, dtype=np.float64)
    if n == 1 or decay == 0:
        return np.ones(n, dtype=np.float64)
    w = np.exp(decay * np.arange(n, dtype=np.float64) / (n - 1))
    return w / w.mean()


def _time_ms(index: pd.Index) -> np.ndarray:
    if isinstance(index, pd.DatetimeIndex):
        return index.as_unit("ms").asi8.astype(np.int64)
    return np.asarray(index, dtype=np.int64)


def build_dataset(
    market: pd.DataFrame,
    params: SignalParams,
    *,
    negative_ratio: int = 3,
    decay: float = 2.0,
    seed: int = 42,
    lookahead: int = LOOKAHEAD,
    warmup: int = WARMUP,
    frame: pd.DataFrame | None = None,
    symbol: str = "",
    min_samples: int = MIN_SAMPLES,
) -> Dataset:
    """Build the sample set of SPEC §5 (see the module docstring for the rules and why).

    ``frame`` may be a precomputed ``build_feature_frame(market, params)`` (the CLI builds it
    once). Raises ``InsufficientDataError`` with a one-line message naming the symbol and the
    counts when fewer than ``min_samples`` samples result.
    """
    from perpbot.ml import features as feat  # imported lazily: heavy (TA-Lib) and optional in tests

    if negative_ratio < 0:
        raise ValueError(f"negative_ratio must be >= 0, got {negative_ratio}")
    if frame is None:
        frame = feat.build_feature_frame(market, params)
    cols = tuple(feat.FEATURE_COLS)
    n_bars = len(frame)
    name = symbol or str(market.attrs.get("symbol", "")) or "dataset"

    X_all = frame.loc[:, list(cols)].to_numpy(dtype=np.float64)
    # The OI/funding group may be NaN (the real files record no OI); the correlation group is
    # required only when the market carries BTC/ETH candles (SPEC §4: the group is added only then).
    may_be_nan = set(feat.OPTIONAL_FEATURES)
    if not {"close_btc", "close_eth"} <= set(market.columns):
        may_be_nan |= set(feat.CORRELATION_FEATURES)
    required = [j for j, c in enumerate(cols) if c not in may_be_nan]
    finite = np.isfinite(X_all[:, required]).all(axis=1)
    pos = np.arange(n_bars)
    eligible = finite & (pos >= warmup) & (pos < n_bars - lookahead)

    signal = frame["signal"].to_numpy(dtype=np.int8)
    atr = frame["atr"].to_numpy(dtype=np.float64)
    close = frame["close"].to_numpy(dtype=np.float64)
    labels = barrier_labels(
        market["high"].to_numpy(dtype=np.float64),
        market["low"].to_numpy(dtype=np.float64),
        close,
        atr,
        np.where(eligible, signal, 0),
        params.atr_sl_mult,
        params.atr_tp_mult,
        lookahead=lookahead,
    )
    sig_rows = np.flatnonzero(eligible & (signal != 0) & np.isfinite(labels))
    hold_candidates = np.flatnonzero(eligible & (signal == 0))

    rng = np.random.default_rng(seed)
    n_neg = min(hold_candidates.size, negative_ratio * sig_rows.size)
    neg_rows = np.sort(rng.choice(hold_candidates, size=n_neg, replace=False)) if n_neg else pos[:0]
    neg_side = rng.integers(0, 2, size=n_neg).astype(np.int8)  # 1 LONG, 0 SHORT

    n = sig_rows.size + neg_rows.size
    if n < max(min_samples, 1):
        raise InsufficientDataError(
            f"{name}: only {n} samples ({sig_rows.size} signal rows, {neg_rows.size} HOLD negatives) "
            f"from {n_bars} bars; training needs at least {max(min_samples, 1)}"
        )

    bars = np.concatenate([sig_rows, neg_rows]).astype(np.int64)
    order = np.argsort(bars, kind="stable")
    bars = bars[order]

    X = X_all[bars].copy()
    sig_side = (signal[sig_rows] > 0).astype(np.int8)
    side = np.concatenate([sig_side, neg_side])[order]
    is_neg = np.concatenate([np.zeros(sig_rows.size, bool), np.ones(neg_rows.size, bool)])[order]
    # HOLD negatives: the real score of their random side, as the live builder would compute it.
    long_score = frame["long_score"].to_numpy(dtype=np.float64)[bars]
    short_score = frame["short_score"].to_numpy(dtype=np.float64)[bars]
    X[is_neg, feat.SIDE_INDEX] = side[is_neg]
    X[is_neg, feat.SIGNAL_STRENGTH_INDEX] = np.where(
        side[is_neg] == 1, long_score[is_neg], short_score[is_neg]
    )

    y = np.concatenate([labels[sig_rows], np.zeros(neg_rows.size)])[order].astype(np.int8)
    source = np.where(is_neg, SOURCE_HOLD, SOURCE_SIGNAL)
    time_ms = _time_ms(frame.index)[bars]
    return Dataset(
        X=X,
        y=y,
        w=time_decay_weights(n, decay),
        bar_index=bars,
        time_ms=time_ms,
        source=source,
        side=side,
        label_end_bar=bars + lookahead,
        feature_cols=cols,
        symbol=name,
        lookahead=lookahead,
        n_bars=n_bars,
        info={
            "negative_ratio": negative_ratio,
            "decay": decay,
            "seed": seed,
            "warmup": warmup,
            "eligible_bars": int(eligible.sum()),
            "hold_candidates": int(hold_candidates.size),
        },
    )


def stratified_undersample(y: np.ndarray, source: np.ndarray, seed: int = 42) -> np.ndarray:
    """Balanced positions for the *training part only* (SPEC §5 "Balance").

    Keeps every positive and every signal negative — the model must see all real signal outcomes —
    plus ``min(#hold negatives, #positives)`` HOLD negatives drawn with a seeded generator.
    Returns sorted positions into ``y``. Validation and early-stopping slices are never balanced:
    their class mix is what the model meets in production.
    """
    y = np.asarray(y)
    source = np.asarray(source)
    if y.shape != source.shape:
        raise ValueError("y and source must have the same shape")
    is_hold = source == SOURCE_HOLD
    keep = np.flatnonzero(~is_hold)  # all signal rows: positives and signal negatives
    pos_extra = np.flatnonzero(is_hold & (y == 1))  # never produced by build_dataset; kept if given
    hold_neg = np.flatnonzero(is_hold & (y == 0))
    n_pos = int((y == 1).sum())
    n_take = min(hold_neg.size, n_pos)
    rng = np.random.default_rng(seed)
    drawn = rng.choice(hold_neg, size=n_take, replace=False) if n_take else hold_neg[:0]
    return np.sort(np.concatenate([keep, pos_extra, drawn])).astype(np.int64)
