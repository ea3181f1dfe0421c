"""Start-up refusals of ``perpbot run`` (issue 10, "Bad input"): each is one line, exit 2, and
happens before the adapter sends anything.

- live mode is never an accident: ``BINANCE_ENV=live`` needs ``--live`` *and* ``PERPBOT_LIVE=yes``,
  and a ``custom`` venue whose URL is Binance's live host is refused (it would trade real money
  with the live keys, unconfirmed, its alerts tagged ``[TESTNET]``);
- a second ``perpbot run`` on the same journal: an exclusive ``flock`` on ``<journal>.lock``, held
  for the life of the process (the kernel releases it when the process dies, even on SIGKILL, so
  a crash never leaves a stale lock behind);
- a journal written by a newer perpbot: SQLite's ``user_version`` carries the journal format;
- a model for another feature schema: the entry filter is loaded up front and a model file that
  exists but does not verify stops start-up (a missing model is not an error: the bot trades
  without the filter, says so and alerts, as SPEC §6 asks).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from perpbot.config import MAX_DAILY_LOSS, MAX_POSITIONS, AppConfig
from perpbot.errors import ConfigError, DataError, ModelError

JOURNAL_FORMAT = 1  # bump when the journal's tables change incompatibly
LIVE_CONFIRM_VAR = "PERPBOT_LIVE"


def check_live_confirmation(cfg: AppConfig, live_flag: bool, environ: Mapping[str, str]) -> None:
    """Real money needs both the flag and the environment variable; the flag never switches a
    demo/custom configuration to live by itself (it is refused, so a typo cannot go live)."""
    confirmed = environ.get(LIVE_CONFIRM_VAR, "").strip().lower() == "yes"
    for name, url in (("BINANCE_FAPI_URL", cfg.fapi_url), ("BINANCE_WS_URL", cfg.ws_url)):
        host = (urlsplit(url.strip()).hostname or "").lower().rstrip(".")
        if cfg.binance_env == "custom" and _binance_production(host):
            raise ConfigError(
                f"BINANCE_ENV=custom with {name} on {host}: that is Binance live (real money); use "
                "BINANCE_ENV=live with --live and PERPBOT_LIVE=yes"
            )
    if cfg.binance_env == "live":
        if not live_flag:
            raise ConfigError(
                "BINANCE_ENV=live trades real money: pass --live and set PERPBOT_LIVE=yes "
                "(or use BINANCE_ENV=demo / perpbot paper)"
            )
        if not confirmed:
            raise ConfigError(f"--live without confirmation: set {LIVE_CONFIRM_VAR}=yes to trade real money")
    elif live_flag:
        raise ConfigError(
            f"--live given but BINANCE_ENV={cfg.binance_env}: live trading needs BINANCE_ENV=live"
        )


def _binance_production(host: str) -> bool:
    """A Binance host that is not demo trading (``demo-fapi``) nor the testnet (``binancefuture.com``)."""
    return (host == "binance.com" or host.endswith(".binance.com")) and not host.startswith("demo-")


class JournalLock:
    """Exclusive lock on ``<journal>.lock`` for the process's lifetime."""

    def __init__(self, journal: Path) -> None:
        self.path = Path(str(journal) + ".lock")
        self._fh: IO[str] | None = None

    def acquire(self) -> JournalLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise ConfigError(
                f"{self.path.parent / self.path.name[: -len('.lock')]}: journal in use by {holder} "
                "(a second perpbot run on the same journal is refused)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def check_journal_format(path: Path) -> None:
    """Refuse a journal of a newer format; stamp a new or current one with ours."""
    if not path.exists():
        return
    try:
        con = sqlite3.connect(path)
        try:
            version = int(con.execute("PRAGMA user_version").fetchone()[0])
            if version > JOURNAL_FORMAT:
                raise ConfigError(
                    f"{path}: journal format {version} written by a newer perpbot (this one reads "
                    f"<= {JOURNAL_FORMAT}); upgrade perpbot or use another journal"
                )
            if version < JOURNAL_FORMAT:
                con.execute(f"PRAGMA user_version = {JOURNAL_FORMAT}")
                con.commit()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not a perpbot journal ({exc})") from None


def load_entry_filter(models_root: Path, symbol: str, cfg: AppConfig, *, use_ml: bool) -> object:
    """The live filter (hot reload on); a model that exists but does not verify is refused."""
    from perpbot.data.schema import model_dir
    from perpbot.ml.decision import PassThroughFilter

    if not use_ml or cfg.no_ml_filter:
        return PassThroughFilter()
    from perpbot.ml.filter import MLFilter

    f = MLFilter(
        model_dir(models_root, symbol),
        backends=cfg.ml_backends,
        threshold=cfg.ml_threshold,
        threshold_mode=cfg.ml_threshold_mode,
        hot_reload=True,
        allow_ungated=cfg.ml_allow_ungated,
    )
    if f.last_load_errors:
        raise ModelError(f"{symbol}: {f.last_load_errors[0]}")
    return f


def trading_plan(cfg: AppConfig, balance: float, mode: str, *, use_ml: bool = True) -> list[str]:
    """What the runtime will trade, printed before the first order (issue 10 §1)."""
    lines = [
        f"perpbot {mode}: {', '.join(cfg.symbols)} on Binance {cfg.binance_env} "
        f"(correlation {cfg.correlation.btc}/{cfg.correlation.eth})",
        f"  balance {balance:.2f} USDT; leverage {cfg.leverage}x isolated; margin per position "
        f"{cfg.margin_min_ratio:.0%}..{cfg.margin_max_ratio:.0%} of balance / symbols",
        f"  limits: {MAX_POSITIONS} positions, {cfg.max_same_direction} same direction, "
        f"daily loss {MAX_DAILY_LOSS:.0%} of the base balance; ML filter "
        f"{'off' if cfg.no_ml_filter or not use_ml else 'on (threshold ' + cfg.ml_threshold_mode + ')'}",
    ]
    return lines
