"""Where a study lives (Optuna's RDB storage) and the fingerprint that guards who may join it.

URLs: without ``--storage`` the study is SQLite in ``<out>/optimize.sqlite3``. ``postgresql://``
(or ``postgres://``) URLs are rewritten to SQLAlchemy's ``postgresql+psycopg://`` dialect, the
psycopg 3 driver pinned in ``pyproject.toml``; ``postgresql+psycopg://`` and ``sqlite:///`` are
taken as given. The connection is tried before anything else, so an unreachable server or a wrong
password is one line (password masked), never a traceback half-way through a search.

Heartbeat: every worker's running trial is stamped every ``heartbeat`` seconds; a trial not stamped
for ``2 × heartbeat`` (its worker was killed, or its machine lost) is set to FAIL by whichever
worker looks next (Optuna's ``fail_stale_trials``), and ``RetryHeartbeatStaleTrialCallback``
queues a WAITING copy with the same parameters, which the next free worker runs. So a killed
worker's trial is neither lost nor stuck, and the study still reaches its trial count.

Fingerprint: the study records, as user attributes ``fp:<key>``, everything its scores depend on
(data hash, perpbot version, symbol, folds, metric, minimum trades, embargo, ML, search space,
sampler, seed, the risk/fee settings, and the plan length for the reproducible ``qmc`` sampler).
A worker whose own values differ refuses to join and names the first difference.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
import pandas as pd

from perpbot.errors import ConfigError

SQLITE_NAME = "optimize.sqlite3"
FP_PREFIX = "fp:"
FP_READY = "fp:ready"
JOIN_WAIT_S = 60.0
SCHEMA_RETRIES = 5


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (never print secrets)."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


def normalize_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith(("postgresql+psycopg://", "sqlite:///")):
        return url
    raise ConfigError(
        f"--storage {mask_url(url)}: expected postgresql://user:password@host:port/db (or sqlite:///path)"
    )


def open_storage(url: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """Connect (and create Optuna's tables if needed); ``ConfigError`` naming the URL on failure."""
    import warnings

    import sqlalchemy.exc

    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 5}
    else:
        kwargs["connect_args"] = {"timeout": 60}
    for attempt in range(SCHEMA_RETRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=2 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
                )
            if url.startswith("sqlite"):
                serialize_sqlite(storage.engine)
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers starting together on an empty database race to create Optuna's tables;
            # the loser sees a duplicate-object error and simply finds the tables next time.
            if attempt == SCHEMA_RETRIES - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
        except (sqlalchemy.exc.SQLAlchemyError, OSError, ImportError) as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            line = next((x.strip() for x in detail if x.strip()), type(exc).__name__)
            raise ConfigError(f"--storage {mask_url(url)}: cannot open the study storage: {line}") from None
    raise AssertionError("unreachable")


def serialize_sqlite(engine: Any) -> None:
    """Make every SQLite transaction ``BEGIN IMMEDIATE`` (SQLAlchemy's documented pysqlite recipe).

    Why: Optuna hands a WAITING trial to one worker by reading its state and setting it RUNNING
    under ``SELECT … FOR UPDATE``, which SQLite ignores. With SQLite's default deferred
    transactions two local workers can both read WAITING and both run the trial (seen in
    practice). An immediate transaction takes the write lock before the read, so the
    read-and-set is atomic across processes, as it is on PostgreSQL.
    """
    from sqlalchemy import event

    engine.dispose()  # connections opened while creating the schema use the default mode

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver issues no BEGIN of its own

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def data_hash(market: pd.DataFrame) -> str:
    """sha256 of the candles (open times and every column, by name) — what the trials read."""
    h = hashlib.sha256()
    h.update(market.index.as_unit("ms").asi8.astype("<i8").tobytes())
    for col in sorted(market.columns):
        h.update(col.encode())
        h.update(np.ascontiguousarray(market[col].to_numpy(dtype="<f8")).tobytes())
    return h.hexdigest()


def _canon(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def create_or_join(
    storage: optuna.storages.RDBStorage,
    name: str,
    fingerprint: Mapping[str, Any],
    sampler: optuna.samplers.BaseSampler,
    plan: list[dict[str, float | int]] | None,
) -> optuna.Study:
    """Create the study (enqueueing ``plan`` first, fingerprint last) or join it after checking.

    The fingerprint's ``ready`` mark is written after the plan, so a worker racing the creator
    waits until the plan is complete and never samples on its own.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name, sampler=sampler)
        check_fingerprint(study, fingerprint)
        return study
    for params in plan or ():
        study.enqueue_trial(params)
    for key, value in fingerprint.items():
        study.set_user_attr(FP_PREFIX + key, _canon(value))
    study.set_user_attr(FP_READY, True)
    return study


def check_fingerprint(study: optuna.Study, fingerprint: Mapping[str, Any]) -> None:
    deadline = time.monotonic() + JOIN_WAIT_S
    attrs = study.user_attrs
    while FP_READY not in attrs:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"study {study.study_name!r}: exists but was never finished being set up "
                "(its creator stopped early); use another --study"
            )
        time.sleep(0.2)
        attrs = study.user_attrs
    for key, value in fingerprint.items():
        stored = attrs.get(FP_PREFIX + key)
        mine = _canon(value)
        if stored != mine:
            raise ConfigError(
                f"study {study.study_name!r} was made with another {key} ({_short(stored)} ≠ this "
                f"worker's {_short(mine)}); use the same data/version/settings or another --study"
            )


def _short(v: str | None) -> str:
    if v is None:
        return "none"
    return v if len(v) <= 40 else v[:16] + "…" + v[-8:]
