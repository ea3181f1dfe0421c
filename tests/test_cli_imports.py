"""Importing the CLI entry point stays light: heavy libraries load only in the command that needs
them (issue 13, imports), so ``perpbot --help`` never pays for pandas, plotting or ML runtimes,
and ``perpbot backtest`` loads what its data and rules need but never plotting (its charts are
drawn by a forked worker, ``backtest.chart_pool``), ML runtimes with ``--no-ml``, or exchange
clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perpbot.backtest.chart_pool import usable_cpus
from perpbot.config_env import ENV_FIELDS

HEAVY = (
    "pandas",
    "numpy",
    "pyarrow",
    "pydantic_settings",
    "matplotlib",
    "plotly",
    "lightgbm",
    "torch",
    "onnxruntime",
    "ccxt",
    "aiohttp",
    "talib",
)


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in json.loads(out.stdout)}


def test_cli_main_imports_no_heavy_library() -> None:
    loaded = _modules_after("import perpbot.cli.main")
    assert sorted(loaded & set(HEAVY)) == []


def test_the_check_sees_a_heavy_import() -> None:
    # The probe itself works: a command module that needs pandas does load it.
    assert "pandas" in _modules_after("import perpbot.cli.main\nimport perpbot.data.candle_shape")


def _modules_after_command(*argv: str, env: dict[str, str] | None = None) -> set[str]:
    """Top-level modules loaded in the ``perpbot`` process once the command has finished."""
    code = (
        "import json, sys\n"
        "from perpbot.cli.main import app\n"
        "try:\n"
        f"    app({list(argv)!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "sys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return {name.split(".")[0] for name in json.loads(out.stderr.strip().splitlines()[-1])}


def test_help_imports_no_heavy_library() -> None:
    loaded = _modules_after_command("--help")
    assert sorted(loaded & set(HEAVY)) == []
    assert sorted(loaded & {"asyncio", "ssl"}) == []  # ~40 ms; only the commands that run a loop
    assert sorted(_modules_after_command("backtest", "--help") & set(HEAVY)) == []


@pytest.mark.skipif(usable_cpus() < 2, reason="one core: the charts are drawn in process (chart_pool)")
def test_backtest_imports_its_data_stack_but_never_plotting(
    synth_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    args = ("backtest", "--all", "--no-ml", "--data-dir", str(synth_data_dir), "--out", str(out), "--quiet")
    cache = {"PERPBOT_CACHE_DIR": str(tmp_path / "cache")}
    for name, (kind, _) in ENV_FIELDS.items():  # the SPEC's numbers, whatever the shell sets
        if kind is not str:
            monkeypatch.delenv(name, raising=False)
    loaded = _modules_after_command(*args, env=cache)  # cold: the input cache is empty
    needed = {"numpy", "pyarrow", "talib"}  # data, rules
    assert needed <= loaded
    # no pydantic-settings either (config_env checks the variables on pydantic-core alone, and
    # only when a numeric one is set: this run sets none)
    assert "pydantic_core" not in loaded
    # no pandas (arrays from parquet), matplotlib, plotly, ML runtime or ccxt
    assert sorted(loaded & (set(HEAVY) - needed)) == []
    assert "pydantic" not in loaded  # typer's option coercion without it (cli.light_params)
    # …and yet every chart is there: the worker drew them.
    charts = ["equity.png", *(f"trades_{s}.png" for s in ("xrpusdt", "trxusdt", "dogeusdt"))]
    for name in charts:
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
        assert (out / name).with_suffix(".html").stat().st_size > 100_000
    # Warm: the input cache serves the arrays and features (backtest.input_cache), no parquet read.
    warm = _modules_after_command(*args, env=cache)
    assert "pyarrow" not in warm and "numpy" in warm and "pydantic_core" not in warm


def test_the_cli_skips_the_final_garbage_collection() -> None:
    # With pandas loaded, the interpreter's last collection at shutdown cost 0.1-0.5 s of every
    # command's wall; main() freezes the heap instead, after the command (even one that exits).
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: sys.stderr.write(f'frozen={gc.get_freeze_count() > 0}'))\n"
        "sys.argv = ['perpbot', '--version']\n"
        "from perpbot.cli.main import main\n"
        "main()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("perpbot ")
    assert out.stderr.strip().endswith("frozen=True")


def test_each_command_maps_to_the_module_that_registers_it() -> None:
    # ``main`` registers only the named command's module (start-up, issue 13): the map must be the
    # registrations themselves, every top-level command and group included.
    import typer

    from perpbot.cli.main import COMMAND_MODULE, MODULES, build_app

    seen: dict[str, str] = {}
    for module in MODULES:
        one = build_app([module])
        names = [c.name for c in one.registered_commands] + [
            g.typer_instance.info.name if g.name is None else g.name
            for g in one.registered_groups
            if isinstance(g.typer_instance, typer.Typer)
        ]
        seen.update({str(n): module for n in names})
    assert seen == COMMAND_MODULE


def test_a_command_run_imports_only_its_own_command_module(synth_data_dir: Path) -> None:
    loaded = _modules_after_main("backtest", "--symbol", "NOPEUSDT", "--data-dir", str(synth_data_dir))
    assert "perpbot.cli.backtest_cmd" in loaded
    assert not {"perpbot.cli.train_cmds", "perpbot.cli.ops_cmds", "typer.rich_utils"} & loaded


def _modules_after_main(*argv: str) -> set[str]:
    code = (
        "import json, sys\n"
        f"sys.argv = ['perpbot', *{list(argv)!r}]\n"
        "from perpbot.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write('\\n' + json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return set(json.loads(out.stderr.strip().splitlines()[-1]))


def test_nothing_but_the_run_is_imported_before_the_first_candle(
    synth_data_dir: Path, tmp_path: Path
) -> None:
    # Issue 13 (first candle within 0.4 s), as module counts, not seconds: at the loop's start a
    # warm ``perpbot backtest --quiet`` has not imported pydantic (typer's option coercion:
    # cli.light_params), rich (output and progress bar come after the run: cli.common), numpy.ma
    # (a median only for unknown symbols), pyarrow (the input cache serves the arrays),
    # pydantic-core (no numeric setting to check: config_env) or the report's modules.
    args = ["backtest", "--all", "--no-ml", "--data-dir", str(synth_data_dir), "--quiet"]
    code = (
        "import json, sys\n"
        "import perpbot.backtest.runner as runner\n"
        "drive = runner._drive\n"
        "async def first(*a, **k):\n"
        "    sys.stderr.write('\\nFIRST ' + json.dumps(sorted(sys.modules)) + '\\n')\n"
        "    return await drive(*a, **k)\n"
        "runner._drive = first\n"
        "from perpbot.cli.main import main\n"
        "sys.argv = ['perpbot', *sys.argv[1:]]\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ENV_FIELDS or ENV_FIELDS[k][0] is str}
    env["PERPBOT_CACHE_DIR"] = str(tmp_path / "cache")
    loaded: set[str] = set()
    for k in range(2):  # the first run fills the input cache, the second is served by it
        out = subprocess.run(
            [sys.executable, "-c", code, *args, "--out", str(tmp_path / f"run{k}")],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        line = next(x for x in out.stderr.splitlines() if x.startswith("FIRST "))
        loaded = set(json.loads(line[len("FIRST ") :]))
    tops = {name.split(".")[0] for name in loaded}
    assert not {"pydantic", "pydantic_core", "rich", "pyarrow", "pandas", "matplotlib", "plotly"} & tops
    assert "numpy.ma" not in loaded
    # the report's modules come after the loop (metrics) or in the chart worker (charts)
    report = {"perpbot.backtest.metrics", "perpbot.backtest.charts", "perpbot.backtest.trade_chart"}
    assert not report & loaded
    assert "numpy" in tops  # the run's own needs are there


def test_the_quiet_progress_counts_without_rich() -> None:
    code = (
        "import sys\n"
        "from perpbot.cli.common import progress\n"
        "with progress(True) as bar:\n"
        "    a = bar.add_task('a', total=None)\n"
        "    b = bar.add_task('b', total=5)\n"
        "    bar.update(a, completed=3, total=9)\n"
        "    bar.advance(b, 2)\n"
        "    bar.update(b, advance=1, description='b 2/5')\n"
        "    bar.remove_task(a)\n"
        "    print([(t.id, t.description, t.completed, t.total) for t in bar.tasks])\n"
        "print(any(m.startswith('rich') for m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[(1, 'b 2/5', 3, 5)]", "False"]
