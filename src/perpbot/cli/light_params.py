"""Command-line values without pydantic where typer's coercion is plain Python (issue 13 start-up).

Why: typer 0.29 coerces every option's value, its default and an unset ``None`` included, through
a pydantic ``TypeAdapter`` it builds on the option's first use; the first one imports pydantic
(~0.1 s CPU, measured: a quarter of a ``perpbot backtest``'s way to its first candle), although
perpbot's own configuration needs only pydantic-core (``config_env``). For the kinds perpbot's
options declare, typer's adapter does nothing pydantic is needed for:

* an unset value (``None``): typer returns it (or ``()`` for a multi-value option) before
  coercing, whatever the type; the adapter is built only to be skipped;
* ``str``: the adapter returns the given string (``_parse_cli_str``, then ``str`` validation);
* ``pathlib.Path`` (no custom parser or path type): the adapter calls typer's own
  ``coerce_cli_path`` (existence, file/folder, readable/writable checks and their messages),
  which for a ``Path`` value uses no pydantic; pydantic only turned the string into ``Path(s)``
  (done here for a string that ``Path`` gives back unchanged, as error messages quote it).

So :func:`install` gives typer's parameters a runtime parameter that does exactly that for those
values and builds typer's own adapter, on first need, for everything else (int, float, bool
values, choices, ranges, parsers, lists, files). Same values, same errors; only the import moves
to where it is used. ``tests/test_cli_light_params.py`` compares both ways value by value.

Tied to typer's internals (``_TyperParameter.get_runtime_param``, ``RuntimeParam``,
``coerce_cli_path``) of the pinned 0.29.2: with another version, or when any of them is missing,
:func:`install` does nothing and typer works as shipped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPECTED_TYPER = "0.29.2"


def install() -> bool:
    """Patch typer's parameters once (module docstring); False when typer is not the expected one."""
    try:
        import typer
        from typer import _coercion, _param_types
        from typer.core import _TyperParameter
    except ImportError:  # pragma: no cover - a typer without these internals
        return False
    if typer.__version__ != EXPECTED_TYPER or not all(
        hasattr(obj, name)
        for obj, name in (
            (_TyperParameter, "get_runtime_param"),
            (_coercion, "RuntimeParam"),
            (_coercion, "build_runtime_param"),
            (_param_types, "coerce_cli_path"),
            (_param_types, "routes_to_path"),
        )
    ):
        return False
    if getattr(_TyperParameter.get_runtime_param, "_perpbot_light", False):
        return True
    _TyperParameter.get_runtime_param = _get_runtime_param  # type: ignore[method-assign]
    return True


def _get_runtime_param(self: Any) -> Any:
    if self._runtime_param is None:
        self._runtime_param = light_param(self.type_descriptor)
    return self._runtime_param


_get_runtime_param._perpbot_light = True  # type: ignore[attr-defined]


@functools.cache
def _light_class() -> type:
    """The runtime parameter class, made once (it subclasses typer's, imported on first use)."""
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import coerce_cli_path

    @dataclass(frozen=True)
    class LightRuntimeParam(RuntimeParam):
        descriptor: Any
        kind: str | None  # "str", "path" or None (typer's own coercion for every value)

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if self.kind == "str" and type(value) is str:
                return value
            if self.kind == "path" and (as_path := self._as_path(value)) is not None:
                info = self.parameter_info
                return coerce_cli_path(as_path, info, path_type=self.annotation, param=param, ctx=ctx)
            # Anything else: typer's own runtime parameter (pydantic), built once.
            full = self.__dict__.get("_full")
            if full is None:
                full = build_runtime_param(self.descriptor)
                object.__setattr__(self, "_full", full)
            return full._coerce_value(value, param=param, ctx=ctx)

        def _as_path(self, value: Any) -> Path | None:
            """``value`` as the option's path type, when that needs no pydantic: a path already,
            or a string that reads back as itself (typer's messages quote the raw value)."""
            if isinstance(value, self.annotation):
                return value
            if type(value) is str and str(path := self.annotation(value)) == value:
                return path
            return None

    return LightRuntimeParam


def light_param(descriptor: Any) -> Any:
    """typer's runtime parameter for ``descriptor``, pydantic-free where the module docstring says."""
    from typer._param_types import routes_to_path

    info = descriptor.parameter_info
    ann = descriptor.annotation
    kind: str | None = None
    if descriptor.file_annotation is None and info.parser is None:
        if ann is str:
            kind = "str"
        elif (
            isinstance(ann, type)
            and issubclass(ann, Path)
            and routes_to_path(ann, info)
            and getattr(info, "path_type", None) in (None, ann)
        ):
            kind = "path"
    return _light_class()(info, ann, descriptor, kind)
