"""Storage guarantees the scale-out rests on, on SQLite (the PostgreSQL ones: test_postgres.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from perpbot.errors import ConfigError
from perpbot.optimize.storage import mask_url, normalize_url, open_storage

from .conftest import barrier_code

POPS = 25


def test_urls_are_normalized_and_masked() -> None:
    assert normalize_url("postgresql://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert normalize_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert mask_url("postgresql+psycopg://u:secret@h:5/db") == "postgresql+psycopg://u:***@h:5/db"
    with pytest.raises(ConfigError, match=r"--storage mysql://u:\*\*\*@h/db: expected postgresql://"):
        normalize_url("mysql://u:pw@h/db")


def test_two_processes_never_pop_the_same_waiting_trial(tmp_path: Path) -> None:
    """Optuna's WAITING → RUNNING hand-over relies on SELECT … FOR UPDATE, which SQLite ignores;
    ``open_storage`` makes SQLite transactions immediate so that two local workers cannot both
    take one queued trial."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=open_storage(url, 5), study_name="s")
    for i in range(2 * POPS):
        study.enqueue_trial({"x": float(i)})
    code = (
        "import json, optuna\n"
        "from perpbot.optimize.storage import open_storage\n"
        f"st = optuna.load_study(storage=open_storage({url!r}, 5), study_name='s')\n"
        + barrier_code(tmp_path, 2)
        + "got = []\n"
        f"for _ in range({POPS}):\n"
        "    t = st.ask()\n"
        "    got.append(t.number)\n"
        "    t.suggest_float('x', 0, 1000)\n"
        "    st.tell(t, 0.0)\n"
        "print(json.dumps(got))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    a, b = (set(json.loads(o)) for o, _ in outs)
    assert len(a) == len(b) == POPS
    assert not a & b
    assert a | b == set(range(2 * POPS))
