"""``perpbot features``: write one symbol's feature matrix so anyone can inspect what the model sees.

The frame is exactly what training, the backtester and the live bot use (``build_feature_frame``):
timestamp index, the 26 features in model order, then the rule signal, both scores, the volume
surge flag, raw ATR, close and raw ADX.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from perpbot.cli.common import (
    AllOpt,
    DataDirOpt,
    QuietOpt,
    SymbolOpt,
    SymbolsOpt,
    config_from_env,
    console,
    note_synthetic,
    progress,
    select_symbols,
    user_errors,
    writable_folder,
)
from perpbot.data.schema import data_path
from perpbot.errors import ConfigError, DataError
from perpbot.fileio import UnwritableFolderError, atomic_write

if TYPE_CHECKING:  # heavy modules load when the command runs, not for --help
    import pandas as pd

    from perpbot.config import AppConfig

OutOpt = Annotated[Path, typer.Option("--out", help="Output parquet file (written atomically).")]


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> Path:
    """Write the matrix atomically: readers never see a half-written file (shared helper)."""
    try:
        return atomic_write(Path(path), lambda tmp: frame.to_parquet(tmp, index=True))
    except UnwritableFolderError as exc:
        raise DataError(f"{path}: cannot write here ({exc.strerror or exc})") from None


def build_symbol_features(symbol: str, data_dir: Path, cfg: AppConfig) -> pd.DataFrame:
    """Load the symbol's validated market file and build its feature frame with its own params."""
    from perpbot.data.store import load_market  # lazy: keeps ``perpbot --help`` fast
    from perpbot.ml.features import build_feature_frame

    market = load_market(data_path(data_dir, symbol))
    return build_feature_frame(market, cfg.params_for(symbol))


def register(app: typer.Typer) -> None:
    @app.command("features")
    @user_errors
    def features_command(
        out: OutOpt,
        symbol: SymbolOpt = None,
        symbols_: SymbolsOpt = None,
        all_: AllOpt = False,
        data_dir: DataDirOpt = Path("data"),
        quiet: QuietOpt = False,
    ) -> None:
        """Write the feature matrix of one symbol (26 features + rule signal and scores) to parquet."""
        cfg = config_from_env()
        if not (symbol or symbols_ or all_):
            raise ConfigError("--symbol is required: the feature matrix is written per symbol")
        chosen = select_symbols(cfg, symbol, all_, symbols_)
        if len(chosen) != 1:
            raise ConfigError(
                f"features writes one symbol per --out file; {len(chosen)} selected ({', '.join(chosen)})"
            )
        (sym,) = chosen
        if out.is_dir():
            raise ConfigError(f"--out={out}: is a folder; features writes one parquet file")
        writable_folder(out.parent, "--out")
        note_synthetic(data_dir, [sym])
        started = time.perf_counter()
        with progress(quiet) as bar:
            task = bar.add_task(f"features {sym}", total=2)
            frame = build_symbol_features(sym, data_dir, cfg)
            bar.advance(task)
            write_parquet_atomic(frame, out)
            bar.advance(task)
        counts = frame["signal"].value_counts()
        console.print(
            f"{sym}: {len(frame)} rows, LONG {int(counts.get(1, 0))}, SHORT {int(counts.get(-1, 0))}, "
            f"{time.perf_counter() - started:.2f} s → {out}",
            markup=False,
            highlight=False,
        )
