"""The ML entry filter as the live bot and the backtester use it: onnxruntime only.

Why onnxruntime only: the live process must not depend on the training stack (LightGBM's OpenMP
runtime, a 700 MB torch) and must evaluate exactly the file that training validated. This module
therefore imports neither ``lightgbm`` nor ``torch`` (a test checks it in a fresh interpreter).

Behaviour (SPEC §6.3, issue 2 §7):

* **Priority**: the first backend of ``backends`` (default ``("nn", "lgbm")``) whose files load
  and verify is used; none → pass-through (every signal allowed). A missing model is normal (not
  logged as an error). A corrupt ONNX, unreadable metadata, an ONNX that does not match its
  metadata (sha256) or a model built for another feature schema logs an ERROR, is counted in
  ``load_error_count`` and makes the filter fall to the next backend. Nothing here raises out of
  ``maybe_reload`` or ``decide``.
* **Deploy gate** (issue 11 §2): a model whose metadata says ``gate: fail`` (it did not beat the
  no-ML baseline on the purged walk-forward folds) is served only with ``allow_ungated``
  (``ML_ALLOW_UNGATED=true``); otherwise it is skipped like a missing model and the reason is
  logged in words (:attr:`MLFilter.unavailable_reason`). A model without a verdict (trained before
  the gate) is served.
* **Backtests** (:func:`backtest_filter`): there, ML on without a loadable model is an error —
  one line naming the file and the reason — not a silent pass-through.
* **Hot reload**: ``maybe_reload()`` (called once per candle) compares the stamps (mtime, size,
  inode) of every configured backend's ONNX and metadata file with those recorded at the last load
  attempt — recorded whether or not anything loaded, and *before* the files are read, so a change
  that lands while reading triggers another reload. Any change → drop the model, load by priority
  again, log the backend now in use.
* **Decision**: disabled (``NO_ML_FILTER``) or no model → allow. Otherwise allow iff
  ``p ≥ threshold``; ``threshold_mode="model"`` uses the operating threshold stored with the
  model when it has one. An inference failure — including a feature vector of the wrong length or
  a non-finite probability — rejects the entry (reason ``"inference_error"``), is counted in
  ``error_count`` and logged as a warning (SPEC: reject, never crash; a bot alerts on repeats).
* **Input dtype** and **latency**: :mod:`perpbot.ml.served_model`.

Thread model: one filter per symbol bot, called from that bot's task. A reload swaps one
reference, so a concurrent ``decide`` sees either the old or the new model, never a mix.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from perpbot.data.schema import model_dir as symbol_model_dir
from perpbot.errors import ModelError
from perpbot.ml.artifacts import BACKENDS, gate_failed, metadata_path, onnx_path, read_model
from perpbot.ml.decision import FilterDecision
from perpbot.ml.features import FEATURE_COLS, feature_schema_hash
from perpbot.ml.served_model import ServedModel, build_served_model, one_line

THRESHOLD_MODES = ("config", "model")

if TYPE_CHECKING:
    from perpbot.config import AppConfig

_DISABLED = FilterDecision(True, None, None, "disabled")
_NO_MODEL = FilterDecision(True, None, None, "no_model")

Stamp = tuple[int, int, int] | None


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class MLFilter:
    """ONNX-served entry filter implementing :class:`perpbot.ml.decision.EntryFilter`."""

    def __init__(
        self,
        model_dir: Path,
        *,
        backends: Sequence[str] = ("nn", "lgbm"),
        threshold: float = 0.55,
        threshold_mode: str = "config",
        disabled: bool = False,
        hot_reload: bool = True,
        allow_ungated: bool = False,
        logger: logging.Logger | None = None,
        on_unavailable: Callable[[str], None] | None = None,
    ) -> None:
        bad = [b for b in backends if b not in BACKENDS]
        if bad or not backends:
            raise ModelError(
                f"ML backends {list(backends)!r}: expected a priority list of {', '.join(BACKENDS)}"
            )
        if threshold_mode not in THRESHOLD_MODES:
            raise ModelError(f"threshold mode {threshold_mode!r}: expected 'config' or 'model'")
        if not (0.0 < float(threshold) <= 1.0):
            raise ModelError(f"ML threshold {threshold!r}: must be in (0, 1]")
        self.model_dir = Path(model_dir)
        self.backends: tuple[str, ...] = tuple(dict.fromkeys(backends))
        self.config_threshold = float(threshold)
        self.threshold_mode = threshold_mode
        self.disabled = bool(disabled)
        self.hot_reload = bool(hot_reload)
        self.allow_ungated = bool(allow_ungated)
        # Live/paper: called with the cause in words whenever a (re)load serves no model, so the
        # runtime can alert (SPEC: log, alert, pass through) without parsing log lines.
        self.on_unavailable = on_unavailable
        self.log = logger or logging.getLogger(__name__)
        # Decisions taken (issue 11 §2: an ML-on run that takes few trades must say why).
        self.seen = 0
        self.accepted = 0
        self.rejected = 0
        # Models that loaded but failed the deploy gate and were not served (words, per backend).
        self.gate_refusals: list[str] = []
        self.error_count = 0  # inference errors (each rejected an entry)
        self.load_error_count = 0  # corrupt / mismatched model files met while loading
        self.last_error: str | None = None
        self.last_load_errors: list[str] = []
        self.reload_count = 0
        self._n_features = len(FEATURE_COLS)
        self._feature_names = list(FEATURE_COLS)
        self._schema = feature_schema_hash()
        self._model: ServedModel | None = None
        self._stamps: dict[Path, Stamp] = {}
        self._watched = [
            p for b in self.backends for p in (onnx_path(self.model_dir, b), metadata_path(self.model_dir, b))
        ]
        if self.disabled:
            self.log.info("ML filter disabled (NO_ML_FILTER) for %s: every signal passes", self.model_dir)
        else:
            self._load()

    @classmethod
    def from_config(
        cls, models_root: Path, symbol: str, config: AppConfig, *, logger: logging.Logger | None = None
    ) -> MLFilter:
        """The filter a bot for ``symbol`` uses: ``<models_root>/<symbol lowercase>/`` and the
        ``ML_BACKENDS`` / ``ML_THRESHOLD`` / ``ML_THRESHOLD_MODE`` / ``NO_ML_FILTER`` settings.

        Deliberately no fallback to the models root (the SPEC's legacy layout): one symbol's model
        must never silently filter another symbol's signals.
        """
        return cls(
            symbol_model_dir(Path(models_root), symbol),
            backends=config.ml_backends,
            threshold=config.ml_threshold,
            threshold_mode=config.ml_threshold_mode,
            disabled=config.no_ml_filter,
            allow_ungated=config.ml_allow_ungated,
            logger=logger,
        )

    # ------------------------------------------------------------------ properties

    @property
    def has_model(self) -> bool:
        return self._model is not None

    @property
    def backend(self) -> str | None:
        m = self._model
        return None if m is None else m.backend

    @property
    def threshold(self) -> float:
        """The threshold decisions use now (the model's when mode is "model" and it has one)."""
        m = self._model
        return self.config_threshold if m is None else m.threshold

    @property
    def threshold_source(self) -> str:
        """Where :attr:`threshold` comes from: ``"model"`` (its stored operating threshold) or
        ``"config"`` (``ML_THRESHOLD``, also the fallback when the model stores none)."""
        m = self._model
        if m is None or self.threshold_mode != "model":
            return "config"
        t = m.metadata.get("operating_threshold")
        return "model" if isinstance(t, (int, float)) and float(t) == m.threshold else "config"

    @property
    def unavailable_reason(self) -> str | None:
        """Why no model is served, in words (None when one is): for logs, alerts and reports."""
        if self.disabled:
            return "the ML filter is disabled (NO_ML_FILTER)"
        if self._model is not None:
            return None
        causes = self.gate_refusals + self.last_load_errors
        if causes:
            return "; ".join(causes)
        names = " or ".join(onnx_path(self.model_dir, b).name for b in self.backends)
        return f"no model file in {self.model_dir} (looked for {names})"

    @property
    def metadata(self) -> dict[str, Any] | None:
        m = self._model
        return None if m is None else m.metadata

    # ------------------------------------------------------------------ loading

    def _current_stamps(self) -> dict[Path, Stamp]:
        return {p: _stamp(p) for p in self._watched}

    def _effective_threshold(self, meta: dict[str, Any]) -> float:
        if self.threshold_mode == "model":
            t = meta.get("operating_threshold")
            if isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 < float(t) <= 1.0:
                return float(t)
        return self.config_threshold

    def _load(self) -> None:
        """Load by priority; record file stamps first (module docstring: hot reload)."""
        self._stamps = self._current_stamps()
        self._model = None
        self.last_load_errors = []
        self.gate_refusals = []
        for backend in self.backends:
            try:
                files = read_model(self.model_dir, backend)
                if files is None:
                    continue
                loaded = build_served_model(
                    files, self._n_features, self._effective_threshold(files.metadata)
                )
                if gate_failed(files.metadata) and not self.allow_ungated:
                    self._gate_refused(backend, files.metadata)
                    continue
            except ModelError as exc:
                self._load_failed(backend, str(exc))
                continue
            except Exception as exc:  # never let a model file crash the bot
                self._load_failed(backend, f"{onnx_path(self.model_dir, backend)}: {one_line(exc)}")
                continue
            self._model = loaded
            meta = loaded.metadata
            self.log.info(
                "ML filter %s: using %s model %s (created %s, threshold %.3f, %s input)",
                self.model_dir,
                backend,
                loaded.path.name,
                meta.get("created_at", "?"),
                loaded.threshold,
                np.dtype(loaded.dtype).name,
            )
            return
        # A missing model is normal (a new symbol): info. A refused or broken one is a warning.
        level = logging.WARNING if (self.gate_refusals or self.last_load_errors) else logging.INFO
        reason = self.unavailable_reason or "no model"
        self.log.log(level, "ML filter %s: no model served, every signal passes: %s", self.model_dir, reason)
        if self.on_unavailable is not None:
            try:
                self.on_unavailable(f"ML filter for {self.model_dir.name}: every signal passes: {reason}")
            except Exception as exc:  # an alert channel must never break the filter
                self.log.error("ML filter: alert callback failed: %s", one_line(exc))

    def _gate_refused(self, backend: str, meta: dict[str, Any]) -> None:
        reason = meta.get("gate_reason") or "no reason recorded"
        self.gate_refusals.append(
            f"the {backend} model in {self.model_dir} failed the deploy gate ({reason}) and is not served "
            "(set ML_ALLOW_UNGATED=true to serve it anyway)"
        )
        self.log.warning("ML filter: %s", self.gate_refusals[-1])

    def _load_failed(self, backend: str, message: str) -> None:
        self.load_error_count += 1
        self.last_load_errors.append(message)
        self.log.error("ML filter: %s model skipped: %s", backend, message)

    def reload(self) -> None:
        """Drop the current model and load again by priority (no-op when disabled)."""
        if self.disabled:
            return
        self.reload_count += 1
        self._load()

    def maybe_reload(self) -> None:
        """Reload when any watched file changed since the last load attempt (SPEC §6.3)."""
        if self.disabled or not self.hot_reload:
            return
        try:
            current = self._current_stamps()
            if current == self._stamps:
                return
            self.log.info("ML filter %s: model files changed; reloading", self.model_dir)
            self.reload()
        except Exception as exc:  # pragma: no cover - defensive: a reload must never crash a bot
            self._model = None
            self._load_failed("?", f"reload failed: {one_line(exc)}")

    # ------------------------------------------------------------------ inference

    def _inference_error(self, m: ServedModel, message: str) -> FilterDecision:
        self.error_count += 1
        self.last_error = message
        self.log.warning(
            "ML filter %s (%s): inference error, entry rejected: %s", self.model_dir, m.backend, message
        )
        return FilterDecision(False, None, m.backend, "inference_error")

    def decide(self, features: np.ndarray) -> FilterDecision:
        """Allow or reject one entry from its float64 feature row in ``FEATURE_COLS`` order."""
        if self.disabled:
            return _DISABLED
        m = self._model
        if m is None:
            return _NO_MODEL
        try:
            if isinstance(features, np.ndarray):
                x = features
            elif hasattr(features, "index") and hasattr(features, "loc"):
                # A pandas row (e.g. ``live_feature_row``, which carries extra columns): restricted
                # to FEATURE_COLS by name, in order (SPEC §6.1); a missing name is an error.
                x = features.loc[self._feature_names].to_numpy(dtype=np.float64)
            else:
                x = np.asarray(features, dtype=np.float64)
            if x.size != m.n_features:
                return self._inference_error(m, f"expected {m.n_features} features, got {x.size}")
            m.flat[:] = x.reshape(-1)
            p = float(m.session.run(m.outputs, m.feeds)[0][0])
        except Exception as exc:
            return self._inference_error(m, one_line(exc))
        if not math.isfinite(p):
            return self._inference_error(m, f"non-finite probability {p!r}")
        self.seen += 1
        if p >= m.threshold:
            self.accepted += 1
            return FilterDecision(True, p, m.backend, "accepted")
        self.rejected += 1
        return FilterDecision(False, p, m.backend, "below_threshold")

    def predict_proba_batch(self, X: Any) -> np.ndarray:
        """Probabilities for many rows (backtests), float64 [n]; same session and dtype as ``decide``.

        Raises ``ModelError`` when no model is loaded (check ``has_model``) or the shape is wrong.
        """
        m = self._model
        if m is None:
            raise ModelError(f"no ML model loaded from {self.model_dir}")
        arr = np.ascontiguousarray(np.asarray(X, dtype=np.float64).astype(m.dtype, copy=False))
        if arr.ndim != 2 or arr.shape[1] != m.n_features:
            raise ModelError(f"expected a [n, {m.n_features}] feature matrix, got shape {arr.shape}")
        if arr.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        out = m.session.run(m.outputs, {m.input_name: arr})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    # ------------------------------------------------------------------ reporting

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for logs, ``perpbot status`` and alerts."""
        m = self._model
        meta = {} if m is None else m.metadata
        return {
            "model_dir": str(self.model_dir),
            "disabled": self.disabled,
            "hot_reload": self.hot_reload,
            "backends": list(self.backends),
            "has_model": m is not None,
            "backend": None if m is None else m.backend,
            "model_file": None if m is None else str(m.path),
            "input_dtype": None if m is None else np.dtype(m.dtype).name,
            "loaded_at": None if m is None else m.loaded_at,
            "created_at": meta.get("created_at"),
            "training_window": meta.get("training_window"),
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "threshold_mode": self.threshold_mode,
            "gate": meta.get("gate"),
            "gate_refusals": list(self.gate_refusals),
            "unavailable_reason": self.unavailable_reason,
            "signals_seen": self.seen,
            "signals_accepted": self.accepted,
            "signals_rejected": self.rejected,
            "config_threshold": self.config_threshold,
            "model_threshold": meta.get("operating_threshold"),
            "error_count": self.error_count,
            "last_error": self.last_error,
            "load_error_count": self.load_error_count,
            "last_load_errors": list(self.last_load_errors),
            "reload_count": self.reload_count,
            "feature_schema_hash": self._schema,
        }


def backtest_filter(models_root: Path, symbol: str, config: AppConfig) -> MLFilter:
    """The filter of one symbol in an ML-on backtest, or ``ModelError`` naming the file and why.

    A backtest labelled "ML on" whose model is missing, corrupt, truncated or mismatched would
    silently trade every signal; here any backend file that exists but does not verify (ONNX,
    metadata or LightGBM text) is an error, and so is a symbol with no model at all. A model that
    failed the deploy gate is *not* an error: the filter skips it (unless ``ML_ALLOW_UNGATED``)
    and the caller reports :attr:`MLFilter.unavailable_reason`, as the live bot would do.
    """
    from perpbot.ml.artifacts import verify_model_files

    folder = symbol_model_dir(Path(models_root), symbol)
    for backend in config.ml_backends:
        verify_model_files(folder, backend)
    f = MLFilter(
        folder,
        backends=config.ml_backends,
        threshold=config.ml_threshold,
        threshold_mode=config.ml_threshold_mode,
        hot_reload=False,
        allow_ungated=config.ml_allow_ungated,
    )
    if f.last_load_errors:
        raise ModelError(f"{symbol}: {f.last_load_errors[0]}")
    if not f.has_model and not f.gate_refusals:
        raise ModelError(
            f"{symbol}: {f.unavailable_reason}; train it (perpbot train --symbol {symbol}) or pass --no-ml"
        )
    return f
