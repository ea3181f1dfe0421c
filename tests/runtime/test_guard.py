"""Start-up refusals: live never by accident, one run per journal, no journal of a newer format."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from perpbot.config import load_config
from perpbot.data.schema import model_dir
from perpbot.errors import ConfigError, ModelError
from perpbot.runtime.guard import (
    JOURNAL_FORMAT,
    JournalLock,
    check_journal_format,
    check_live_confirmation,
    load_entry_filter,
)
from tests.ml.test_filter import install


@pytest.mark.parametrize(
    ("env", "flag", "confirm", "error"),
    [
        ("live", False, "yes", "pass --live and set PERPBOT_LIVE=yes"),
        ("live", True, "", "--live without confirmation"),
        ("live", True, "YES please", "--live without confirmation"),
        ("demo", True, "yes", "--live given but BINANCE_ENV=demo"),
        ("live", True, "yes", None),
        ("demo", False, "", None),
    ],
)
def test_live_needs_the_flag_and_the_confirmation(
    env: str, flag: bool, confirm: str, error: str | None
) -> None:
    cfg = load_config({"BINANCE_ENV": env}, env_file=None)
    environ = {"PERPBOT_LIVE": confirm} if confirm else {}
    if error is None:
        check_live_confirmation(cfg, flag, environ)
    else:
        with pytest.raises(ConfigError, match=error):
            check_live_confirmation(cfg, flag, environ)


LIVE_WS = "wss://fstream.binance.com"


@pytest.mark.parametrize(
    ("fapi", "ws", "error"),
    [
        ("https://fapi.binance.com", LIVE_WS, "BINANCE_FAPI_URL on fapi.binance.com: that is Binance live"),
        ("https://FAPI.Binance.com/", "ws://127.0.0.1:9", "BINANCE_FAPI_URL on fapi.binance.com"),
        ("http://127.0.0.1:9", LIVE_WS, "BINANCE_WS_URL on fstream.binance.com"),
        ("https://demo-fapi.binance.com", "wss://fstream.binancefuture.com", None),
        ("https://testnet.binancefuture.com", "wss://stream.binancefuture.com", None),
        ("http://127.0.0.1:9", "ws://127.0.0.1:9", None),
    ],
)
@pytest.mark.parametrize("flag", [False, True])
def test_a_custom_venue_on_binance_live_is_refused(fapi: str, ws: str, error: str | None, flag: bool) -> None:
    """A custom venue pointed at Binance's live hosts trades real money with the live key pair:
    refused with or without ``--live`` (live is ``BINANCE_ENV=live``, confirmed)."""
    env = {"BINANCE_ENV": "custom", "BINANCE_FAPI_URL": fapi, "BINANCE_WS_URL": ws}
    cfg = load_config(env, env_file=None)
    if error is None:
        if flag:  # --live on a venue that is not live: refused as before
            with pytest.raises(ConfigError, match="--live given but BINANCE_ENV=custom"):
                check_live_confirmation(cfg, flag, {"PERPBOT_LIVE": "yes"})
        else:
            check_live_confirmation(cfg, flag, {})
    else:
        with pytest.raises(ConfigError, match=error):
            check_live_confirmation(cfg, flag, {"PERPBOT_LIVE": "yes"})


def test_a_second_lock_on_the_same_journal_is_refused_until_released(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite3"
    first = JournalLock(journal).acquire()
    with pytest.raises(ConfigError, match=r"journal in use by pid \d+"):
        JournalLock(journal).acquire()
    first.release()
    JournalLock(journal).acquire().release()


def test_a_journal_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite3"
    con = sqlite3.connect(journal)
    con.execute("CREATE TABLE t (x)")
    con.execute(f"PRAGMA user_version = {JOURNAL_FORMAT + 1}")
    con.commit()
    con.close()
    with pytest.raises(ConfigError, match=f"journal format {JOURNAL_FORMAT + 1} written by a newer perpbot"):
        check_journal_format(journal)


def test_an_older_journal_is_stamped_with_the_current_format(tmp_path: Path) -> None:
    journal = tmp_path / "j.sqlite3"
    sqlite3.connect(journal).close()
    check_journal_format(journal)
    con = sqlite3.connect(journal)
    assert con.execute("PRAGMA user_version").fetchone()[0] == JOURNAL_FORMAT
    con.close()


@pytest.mark.parametrize("backend", ["lgbm", "nn"])
def test_a_model_for_another_feature_schema_stops_start_up(tmp_path: Path, backend: str) -> None:
    cfg = load_config({"SYMBOLS": "XRPUSDT"}, env_file=None)
    folder = model_dir(tmp_path, "XRPUSDT")
    install(folder, backend)
    meta = folder / f"{backend}_filter.json"
    meta.write_text(meta.read_text().replace('"feature_schema_hash": "', '"feature_schema_hash": "00'))
    with pytest.raises(ModelError, match=r"XRPUSDT: .*feature schema 00"):
        load_entry_filter(tmp_path, "XRPUSDT", cfg, use_ml=True)
    # without ML nothing is read: the same folder is no obstacle
    assert load_entry_filter(tmp_path, "XRPUSDT", cfg, use_ml=False).decide(np.zeros(26)).allowed
