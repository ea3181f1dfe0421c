"""Shared pieces of the optimize tests: a small synthetic market on disk and the PostgreSQL URL.

The PostgreSQL tests need a real server (``.ci/run`` starts one and exports
``PERPBOT_TEST_PG_URL``). They skip only when that variable is absent outside CI; with ``CI=true``
a missing URL is a failure, so CI can never pass them by skipping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from perpbot.data.schema import data_path
from perpbot.data.store import save_market
from perpbot.data.synth import synth_market

SYMBOL = "XRPUSDT"
SYNTH_DAYS = 42  # 4032 candles: 3 folds of ≥ 7 days each, ~0.1 s per trial


@pytest.fixture(scope="session")
def market() -> pd.DataFrame:
    return synth_market(SYNTH_DAYS, seed=7)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory, market: pd.DataFrame) -> Path:
    root = tmp_path_factory.mktemp("optdata")
    path = data_path(root, SYMBOL)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_market(market, path)
    return root


@pytest.fixture
def pg_url() -> str:
    url = os.environ.get("PERPBOT_TEST_PG_URL", "").strip()
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but PERPBOT_TEST_PG_URL is not set: .ci/run must start PostgreSQL")
        pytest.skip("PERPBOT_TEST_PG_URL not set (start one with scripts/pg_test_server.sh)")
    return url


@pytest.fixture
def study_name() -> str:
    """A fresh study name per test: the PostgreSQL database is shared by the whole session."""
    return f"t{uuid.uuid4().hex[:10]}"


def signal_mid_trial(
    storage: optuna.storages.BaseStorage,
    study_id: int,
    pid: int,
    sig: signal.Signals,
    timeout: float,
    *,
    resume: bool = True,
) -> int:
    """Send ``sig`` to worker ``pid`` while it holds a RUNNING trial; returns that trial's number.

    The worker is SIGSTOPped first and the trial re-read: a stopped process cannot finish it, so
    the signal provably lands mid-trial (no race with the trial's end). A worker stopped while
    it holds SQLite's write lock is let go and caught again later (the re-read would fail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            if str(t.user_attrs.get("worker", "")).endswith(f":{pid}"):
                os.kill(pid, signal.SIGSTOP)
                try:
                    still = storage.get_trial(t._trial_id).state == TrialState.RUNNING
                except optuna.exceptions.StorageInternalError:
                    # Stopped while it held SQLite's write lock ("database is locked"): the
                    # re-read cannot finish. Let it go on and try again at another moment.
                    os.kill(pid, signal.SIGCONT)
                    break
                if still and sig != signal.SIGSTOP:
                    os.kill(pid, sig)
                if resume or not still:
                    os.kill(pid, signal.SIGCONT)
                if still:
                    return t.number
        time.sleep(0.005)
    raise AssertionError(f"worker {pid} never held a running trial")


def barrier_code(folder: Path, parties: int) -> str:
    """Python source that makes ``parties`` child processes leave it together (after their
    imports), so that what follows really runs concurrently."""
    return (
        "import os, pathlib, time\n"
        f"_d = pathlib.Path({str(folder)!r})\n"
        "(_d / f'ready-{os.getpid()}').touch()\n"
        "_t = time.monotonic() + 120\n"
        f"while len(list(_d.glob('ready-*'))) < {parties} and time.monotonic() < _t: time.sleep(0.001)\n"
    )


def wait_for_study(
    url: str, name: str, proc: subprocess.Popen[str], timeout: float = 180
) -> tuple[optuna.storages.RDBStorage, int]:
    """(storage, study id) once ``proc`` has created study ``name``; never creates tables itself
    (that would race the worker's own schema creation)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early ({proc.returncode}): {proc.communicate()[1]}")
        try:
            storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
            for s in storage.get_all_studies():
                if s.study_name == name:
                    return storage, s._study_id
        except Exception:  # tables not there yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"study {name} never appeared")
