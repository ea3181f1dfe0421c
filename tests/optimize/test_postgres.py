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
import uuid
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from perpbot.optimize.space import qmc_plan
from perpbot.optimize.storage import normalize_url

from .conftest import SYMBOL, barrier_code, signal_mid_trial, wait_for_study

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
        *("--sampler", "qmc", "--seed", str(SEED), "--heartbeat", "2", "--no-promote"),
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


def test_two_workers_one_killed_mid_trial(
    pg_url: str, data_dir: Path, tmp_path: Path, study_name: str
) -> None:
    shared = [*common(data_dir), "--storage", pg_url, "--study", study_name]
    a = cli([*shared, "--out", str(tmp_path / "a")], tmp_path)
    # the one-worker reference run (SQLite, same seed), concurrently to save wall time
    ref = cli([*common(data_dir), "--out", str(tmp_path / "ref")], tmp_path)
    b: subprocess.Popen[str] | None = None
    try:
        storage, sid = wait_for_study(normalize_url(pg_url), f"{study_name}-{SYMBOL}", a)
        # Order made deterministic (whatever the machine's load): A is frozen in the middle of a
        # trial, B joins and finishes trials beside it, then A is killed.
        victim = signal_mid_trial(storage, sid, a.pid, signal.SIGSTOP, 120, resume=False)
        b = cli([*shared, "--out", str(tmp_path / "b")], tmp_path)
        deadline = time.monotonic() + 120
        while not any(
            str(t.user_attrs.get("worker", "")).endswith(f":{b.pid}")
            for t in storage.get_all_trials(
                sid, deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
            )
        ):
            assert time.monotonic() < deadline and b.poll() is None, "worker B never finished a trial"
            time.sleep(0.02)
        os.kill(a.pid, signal.SIGKILL)
        assert a.wait(timeout=30) == -signal.SIGKILL
        _, err_b = b.communicate(timeout=240)
        assert b.returncode == 0, err_b
    finally:
        for p in (a, b, ref):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()

    trials = storage.get_all_trials(sid, deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # (a trial Optuna creates when two workers race for the last queued one does no work and is
    # marked "unplanned"; it is not a run)
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("unplanned")]
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


def test_workers_starting_together_on_an_empty_database(pg_url: str, tmp_path: Path) -> None:
    """Optuna's table creation races between workers on a fresh database (PostgreSQL reports a
    duplicate type); every worker must still open the storage."""
    import psycopg

    db = f"fresh_{uuid.uuid4().hex[:8]}"
    plain = normalize_url(pg_url).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    url = plain.rsplit("/", 1)[0] + f"/{db}"
    code = (
        "from perpbot.optimize.storage import open_storage\n"
        + barrier_code(tmp_path, 3)
        + f"print(len(open_storage({normalize_url(url)!r}, 5).get_all_studies()))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    try:
        assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
        assert [out.strip() for out, _ in results] == ["0", "0", "0"]
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {db} WITH (FORCE)")
