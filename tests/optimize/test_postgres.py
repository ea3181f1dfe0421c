"""Scale-out over a real PostgreSQL server (``PERPBOT_TEST_PG_URL``, started by ``.ci/run``).

Two ``perpbot optimize`` processes share one study; one is SIGKILLed in the middle of a trial.
The study must complete, no trial may run twice, the killed trial must end FAILED and be retried
once with the same parameters, and the result must equal a one-worker run of the same seed (the
``qmc`` sampler: the evaluated set is fixed by trials and seed, see ``perpbot.optimize.study``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from perpbot.optimize.space import qmc_plan
from perpbot.optimize.storage import normalize_url

from .conftest import SYMBOL

N = 12
SEED = 11


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SYMBOLS", "SYMBOL")}
    env["MPLBACKEND"] = "Agg"
    return env


def cli(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "perpbot.cli.main", "optimize", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def common(data_dir: Path) -> list[str]:
    return [
        *("--symbol", SYMBOL, "--folds", "3", "--min-trades", "5", "--trials", str(N)),
        *("--sampler", "qmc", "--seed", str(SEED), "--heartbeat", "1", "--no-promote"),
        *("--data-dir", str(data_dir)),
    ]


def key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def test_wrong_password_is_one_line(pg_url: str, data_dir: Path, tmp_path: Path) -> None:
    bad = re.sub(r"(//[^:/@]+):[^@]*@", r"\1:wrong-pw@", pg_url)
    p = cli([*common(data_dir), "--storage", bad, "--out", str(tmp_path / "o")], tmp_path)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("error: --storage "), err
    assert "password authentication failed" in err and "wrong-pw" not in err


def wait_for_study(storage: optuna.storages.RDBStorage, name: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in storage.get_all_studies():
            if s.study_name == name:
                return s._study_id
        time.sleep(0.05)
    raise AssertionError(f"study {name} never appeared")


def kill_mid_trial(storage: optuna.storages.RDBStorage, study_id: int, pid: int, timeout: float) -> int:
    """SIGSTOP the worker while it holds a RUNNING trial, confirm the trial is still running
    (a stopped process cannot finish it), then SIGKILL it; returns the trial number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            if str(t.user_attrs.get("worker", "")).endswith(f":{pid}"):
                os.kill(pid, signal.SIGSTOP)
                if storage.get_trial(t._trial_id).state == TrialState.RUNNING:
                    os.kill(pid, signal.SIGKILL)
                    return t.number
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("worker A never held a running trial")


def test_two_workers_one_killed_mid_trial(
    pg_url: str, data_dir: Path, tmp_path: Path, study_name: str
) -> None:
    shared = [*common(data_dir), "--storage", pg_url, "--study", study_name]
    a = cli([*shared, "--out", str(tmp_path / "a")], tmp_path)
    b = cli([*shared, "--out", str(tmp_path / "b")], tmp_path)
    # the one-worker reference run (SQLite, same seed), concurrently to save wall time
    ref = cli([*common(data_dir), "--out", str(tmp_path / "ref")], tmp_path)
    storage = optuna.storages.RDBStorage(normalize_url(pg_url))
    try:
        sid = wait_for_study(storage, f"{study_name}-{SYMBOL}", 120)
        victim = kill_mid_trial(storage, sid, a.pid, 120)
        assert a.wait(timeout=30) == -signal.SIGKILL
        _, err_b = b.communicate(timeout=240)
        assert b.returncode == 0, err_b
    finally:
        for p in (a, b, ref):
            if p.poll() is None:
                p.kill()
                p.wait()

    trials = storage.get_all_trials(sid, deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    # the study completed, nothing is left waiting or stuck running
    assert len(finished) == N
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # the killed trial is FAILED, and retried exactly once with the same parameters
    assert [t.number for t in failed] == [victim]
    retries = [t for t in finished if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1 and retries[0].params == failed[0].params
    # no trial ran twice: every plan point was finished exactly once, by one of the two workers
    keys = [key(t.params) for t in finished]
    assert sorted(keys) == sorted(key(p) for p in qmc_plan(N, SEED))
    workers = {str(t.user_attrs["worker"]).rsplit(":", 1)[1] for t in finished}
    assert str(b.pid) in workers

    # the one-worker reference run gives the same result
    _, err = ref.communicate(timeout=240)
    assert ref.returncode == 0, err
    got = json.loads((tmp_path / "b" / "optimize.json").read_text())["symbols"][SYMBOL]
    want = json.loads((tmp_path / "ref" / "optimize.json").read_text())["symbols"][SYMBOL]
    score = {
        key(r["params"]): (r["state"], r["oos_score"], r["is_score"])
        for r in got["all_trials"]
        if r["state"] != "error"
    }
    score_ref = {key(r["params"]): (r["state"], r["oos_score"], r["is_score"]) for r in want["all_trials"]}
    assert score == score_ref
    for field in ("verdict", "pbo", "deflated_sharpe", "defaults"):
        assert got[field] == want[field], field
    assert (got["best"] or {}).get("params") == (want["best"] or {}).get("params")
    assert got["trials"] == {**want["trials"], "error": 1}
