"""``cli.light_help``: typer's help formatter loads without ``rich.markdown`` and
``rich.traceback``, and prints exactly what it prints with them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from perpbot.cli import light_help

RUN_CLI = """
import sys
sys.argv = ["perpbot", *{args!r}]
{before}
from perpbot.cli.main import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("EXIT", code, "markdown_it" in sys.modules, "rich.traceback" in sys.modules, file=sys.stderr)
"""


def _cli(args: list[str], before: str = "") -> tuple[str, str]:
    src = RUN_CLI.format(args=args, before=before)
    done = subprocess.run(
        [sys.executable, "-c", src], capture_output=True, text=True, timeout=120, env={"COLUMNS": "100"}
    )
    return done.stdout, done.stderr


def test_help_is_the_same_text_without_loading_markdown_or_traceback() -> None:
    light_out, light_err = _cli(["--help"])
    full_out, full_err = _cli(["--help"], before="import typer.rich_utils")
    assert "backtest" in light_out and light_out == full_out
    assert light_err.strip() == "EXIT 0 False False"
    assert full_err.strip() == "EXIT 0 True True"  # the comparison run did load them


def test_usage_error_is_the_same_text_without_loading_them() -> None:
    light_out, light_err = _cli(["backtets"])
    full_out, full_err = _cli(["backtets"], before="import typer.rich_utils")
    assert "No such command" in light_err
    assert (light_out, light_err.replace("False False", "")) == (full_out, full_err.replace("True True", ""))
    assert light_err.rstrip().endswith("EXIT 2 False False")


def test_stand_ins_load_the_real_classes_when_used() -> None:
    # A fresh interpreter: the formatter loads under the stand-ins, then each use of a name
    # reaches the real class (markdown help mode, typer's pretty traceback, isinstance).
    src = textwrap.dedent(
        """
        import sys
        from perpbot.cli import light_help
        assert light_help.install()
        import typer.rich_utils as ru
        assert "markdown_it" not in sys.modules and "rich.traceback" not in sys.modules
        md = ru._make_rich_text(text="**bold**", style="", markup_mode="markdown")
        import rich.markdown
        assert type(md) is rich.markdown.Markdown and isinstance(md, ru.Markdown)
        assert sys.modules["rich.markdown"] is rich.markdown
        try:
            raise ValueError("x")
        except ValueError as exc:
            tb = ru.Traceback.from_exception(type(exc), exc, exc.__traceback__)
        import rich.traceback
        assert type(tb) is rich.traceback.Traceback
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_install_does_nothing_for_another_typer_or_a_loaded_formatter(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import typer

    monkeypatch.setattr(typer, "__version__", "0.0.1")
    assert light_help.install() is False
    monkeypatch.undo()
    import typer.rich_utils  # loaded: nothing left to defer

    assert light_help.install() is False
