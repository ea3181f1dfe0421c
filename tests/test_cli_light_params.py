"""``cli.light_params``: perpbot's str, Path and unset option values are coerced without pydantic,
to exactly what typer's own (pydantic) coercion gives: same value, same error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer._coercion import build_runtime_param, resolve_type_descriptor

from perpbot.cli import light_params
from perpbot.cli.main import MODULES, build_app


def _both(annotation: Any, info: Any, value: Any) -> tuple[Any, Any]:
    """(light, typer's own) result of coercing ``value``: the value, or the error's message."""
    desc = resolve_type_descriptor(annotation, info)
    option = SimpleNamespace(multiple=desc.is_list, nargs=1)  # what ``coerce`` reads of the option
    out = []
    for runtime in (light_params.light_param(desc), build_runtime_param(desc)):
        try:
            out.append(runtime.coerce(value, param=option, ctx=None))
        except typer.BadParameter as exc:
            out.append(("error", exc.message))
    return out[0], out[1]


def test_the_pinned_typer_is_patched_once() -> None:
    assert light_params.install() is True
    assert light_params.install() is True  # idempotent
    from typer.core import _TyperParameter

    assert getattr(_TyperParameter.get_runtime_param, "_perpbot_light", False)


@pytest.mark.parametrize("value", ["abc", "", "  padded ", "1000", "on", "ünïcode", None])
def test_a_string_option_gets_what_typer_gives(value: str | None) -> None:
    light, own = _both(str, typer.Option(), value)
    assert light == own and type(light) is type(own)


def test_path_options_get_what_typer_gives_checks_and_errors_included(tmp_path: Path) -> None:
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    values = [str(tmp_path), str(a_file), str(tmp_path / "missing"), "data", "", "./d/", Path("runs/x"), None]
    infos = [
        typer.Option(),
        typer.Option(exists=True),
        typer.Option(exists=True, file_okay=False),
        typer.Option(exists=True, dir_okay=False),
        typer.Option(resolve_path=True),
    ]
    for info in infos:
        for value in values:
            light, own = _both(Path, info, value)
            assert light == own, (info, value)
            assert type(light) is type(own), (info, value)


@pytest.mark.parametrize(
    ("annotation", "value"),
    [(int, "12"), (int, "x"), (int, None), (float, "0.5"), (bool, "true"), (list[str], ("a", "b"))],
)
def test_every_other_kind_is_typers_own_coercion(annotation: Any, value: Any) -> None:
    assert _both(annotation, typer.Option(), value)[0] == _both(annotation, typer.Option(), value)[1]


def test_every_command_option_of_perpbot_is_of_a_kind_it_handles_or_delegates() -> None:
    # Walk every registered option: building the light parameter never fails, and the kinds
    # the backtest command uses (str, Path) take the pydantic-free path.
    from typer.main import get_command

    kinds: dict[str, set[str | None]] = {}

    def walk(cmd: Any) -> None:
        for p in cmd.params:
            rp = light_params.light_param(p.type_descriptor)
            kinds.setdefault(cmd.name or "", set()).add(rp.kind)
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    for module in MODULES:
        walk(get_command(build_app([module])))
    assert kinds["backtest"] >= {"str", "path"}


def test_a_backtest_command_line_never_imports_pydantic(tmp_path: Path) -> None:
    # Parsing alone (a bad symbol stops the command right after): str, Path, bool and unset
    # values, as ``perpbot backtest`` gets them, and pydantic (not pydantic-core) stays out.
    code = (
        "import sys\n"
        "sys.argv = ['perpbot', 'backtest', '--symbol', 'NOPE', '--data-dir', sys.argv[1], '--out',"
        " sys.argv[1] + '/out', '--no-ml', '--quiet', '--balance', '500']\n"
        "from perpbot.cli.main import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print(code, 'pydantic' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PERPBOT_CACHE_DIR": "off"},
    )
    assert out.stdout.split() == ["2", "False"], out.stderr
