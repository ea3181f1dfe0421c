"""typer's help and error formatter without the two rich modules perpbot's help never uses
(issue 13: ``perpbot --help`` in 0.3 s).

Why: ``typer.rich_utils``, imported to print any help or usage error, imports ``rich.markdown``
(the markdown-it parser: ~50 ms measured) and ``rich.traceback`` (~25 ms) at its top: a quarter
of ``perpbot --help``. It uses ``Markdown`` only for ``rich_markup_mode="markdown"`` and
``Traceback`` only for typer's pretty exceptions; perpbot uses neither (rich markup, and
``pretty_exceptions_enable=False``). So :func:`install` lets ``typer.rich_utils`` load with both
names bound to stand-ins that import the real module on first use (a call, an attribute such as
``Traceback.from_exception``, or an ``isinstance`` check): what is printed is the same, byte for
byte (``tests/test_cli_light_help.py``), and a process that does need them pays their import
then.

The stand-in modules are in ``sys.modules`` only while ``typer.rich_utils`` itself loads; any
other import of ``rich.markdown`` or ``rich.traceback`` gets the real module. Tied to the pinned
typer (its ``from rich.markdown import Markdown`` and ``from rich.traceback import Traceback``):
with another version :func:`install` does nothing and typer loads as shipped.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

from perpbot.cli.light_params import EXPECTED_TYPER

TARGET = "typer.rich_utils"
DEFERRED = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}
"""Module → the one name ``typer.rich_utils`` takes from it."""


class _Forwarding(type):
    """Metaclass of a stand-in: calls, attributes and ``isinstance`` go to the real class."""

    _module: str
    _name: str

    def real(cls) -> Any:
        return getattr(importlib.import_module(cls._module), cls._name)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.real()(*args, **kwargs)

    def __getattr__(cls, attr: str) -> Any:
        return getattr(cls.real(), attr)

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, cls.real())


def stand_in(module: str, name: str) -> type:
    """A class object standing for ``module.name`` that imports ``module`` only when used."""
    return _Forwarding(name, (), {"_module": module, "_name": name, "__module__": module})


class _Finder:
    """Wraps the loading of ``typer.rich_utils``; finds nothing else. (A plain class with
    ``find_spec`` is all ``sys.meta_path`` asks for; ``importlib.abc`` costs ~40 ms to import.)"""

    def find_spec(self, name: str, path: Sequence[str] | None, target: types.ModuleType | None = None) -> Any:
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_with_stand_ins(module: types.ModuleType) -> None:
            placed = {}
            for mod, attr in DEFERRED.items():
                if mod not in sys.modules:
                    stub = types.ModuleType(mod)
                    setattr(stub, attr, stand_in(mod, attr))
                    sys.modules[mod] = placed[mod] = stub
            try:
                exec_module(module)
            finally:
                for mod, stub in placed.items():
                    if sys.modules.get(mod) is stub:
                        del sys.modules[mod]

        spec.loader.exec_module = exec_with_stand_ins  # type: ignore[method-assign]
        return spec


_FINDER = _Finder()


def install() -> bool:
    """Defer the two imports for the next load of ``typer.rich_utils``; False (nothing done)
    when typer is not the pinned version or its formatter is already loaded."""
    import typer

    if typer.__version__ != EXPECTED_TYPER or TARGET in sys.modules:
        return False
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    return True
