"""``perpbot paper`` as a user runs it: the report it leaves in ``--out`` (the backtest's report
files), and bad input stopped with one line and exit status 2 before the simulator starts."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from perpbot.data.schema import data_path
from perpbot.data.store import load_market, save_market
from perpbot.data.synth import synth_market
from tests.support.cli import invoke, one_line_error
from tests.support.ml import LOOSE_ENV

SYMBOLS = ("XRPUSDT", "TRXUSDT")


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for k, v in {**LOOSE_ENV, "SYMBOLS": ",".join(SYMBOLS)}.items():
        monkeypatch.setenv(k, v)
    folder = tmp_path / "data"
    # Dated years ahead: a replay's candles are closed by replay time, not by today's clock (the
    # bots' preloaded history was once dropped as "not closed yet", leaving them no warm features).
    for i, s in enumerate((*SYMBOLS, "BTCUSDT", "ETHUSDT")):
        save_market(synth_market(10, 11 + i, symbol=s, start="2031-03-01"), data_path(folder, s))
    return folder


def _start(data: Path) -> str:
    return (load_market(data_path(data, "XRPUSDT")).index[0] + pd.Timedelta(days=8)).strftime("%Y-%m-%d")


class _Webhook(ThreadingHTTPServer):
    """A webhook on a loopback port in its own thread (the CLI runs its own event loop)."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.posts.append(json.loads(body)["content"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/webhooks/1/paper-T0KEN-0123456789"


def test_paper_writes_the_backtest_report_and_prints_its_fingerprint(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    hook = _Webhook()
    # The webhook comes from .env, as for ``perpbot run``: paper reads the same settings.
    (tmp_path / ".env").write_text(f"DISCORD_WEBHOOK_URL={hook.url}\n")
    try:
        res = invoke(
            "paper",
            "--data-dir",
            str(data),
            "--from",
            _start(data),
            "--days",
            "1",
            "--no-ml",
            "--out",
            str(out),
        )
    finally:
        hook.shutdown()
        hook.server_close()
    assert res.exit_code == 0, res.output
    assert hook.posts and all(p.startswith("[PAPER] ") for p in hook.posts)
    assert not any("paper-T0KEN" in p for p in hook.posts)
    assert f"paper: {len(hook.posts)} alerts posted to Discord ([PAPER])" in res.output
    for name in ("trades.csv", "metrics.json", "equity.png", "equity.html", "journal.sqlite3"):
        assert (out / name).stat().st_size > 0, name
    for s in SYMBOLS:
        assert (out / f"trades_{s.lower()}.png").is_file() and (out / f"trades_{s.lower()}.html").is_file()
    doc = json.loads((out / "metrics.json").read_text())
    assert {"fingerprint", "portfolio", "per_symbol", "buy_and_hold", "parameters"} <= set(doc)
    assert doc["parameters"]["mode"] == "paper" and doc["parameters"]["stats"]["candles"] == 96
    # 8 days (768 candles) of history before --from, all of it closed in replay time
    assert doc["parameters"]["stats"]["preloaded_candles"] == dict.fromkeys(
        (*SYMBOLS, "BTCUSDT", "ETHUSDT"), 768
    )
    assert f"paper: fingerprint {doc['fingerprint']}" in res.output
    rows = (out / "trades.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == doc["portfolio"]["trades"] > 0


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--symbols", "DOGEUSDT"], ["no recorded market for DOGEUSDT"]),
        (["--from", "someday"], ["--from='someday'", "not a date"]),
        (["--from", "2040-01-01"], ["--from=2040-01-01", "outside the recorded data"]),
        (["--days", "0"], ["--days=0"]),
        (["--speed", "-1"], ["--speed=-1"]),
        (["--symbols", "XRP USDT"], ["XRP USDT"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_starts(
    data: Path, tmp_path: Path, args: list[str], fragments: list[str]
) -> None:
    out = tmp_path / "report"
    res = invoke("paper", "--data-dir", str(data), "--out", str(out), *args)
    one_line_error(res, *fragments)
    assert not out.exists()  # nothing written, no journal started


def test_a_data_folder_without_the_symbols_data_is_one_line(data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = invoke("paper", "--data-dir", str(empty), "--out", str(tmp_path / "report"))
    one_line_error(res, "no recorded market for XRPUSDT")
