"""Export presets: small TOML files (``export/*.toml``) of ExportConfig values, read by ``--preset FILE``.

A preset is flat: its keys are the ExportConfig field names (config.py), found by introspecting the
dataclass, so a field added to ExportConfig is a valid preset key without touching this module. Values
are TOML values of the field's type (strings for paths); a field whose option parses text (``batch``:
``"1:8:32"``, or an integer) takes that text. Flags given on the command line override preset values.
Unknown keys, values of the wrong type and values that the config check rejects are InputErrors naming
the preset file and the key (the check's error carries the field; nothing is parsed out of a message).

Data flow: ``load_preset(path)`` -> ``{field: typed value}`` -> ``apply_preset(cli_config, values,
given_fields)`` -> a checked ExportConfig.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import types
import typing
from pathlib import Path

from .config import ExportConfig, check_config, flag_of, options
from .errors import InputError, file_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def config_fields() -> dict[str, object]:
    """ExportConfig field name -> resolved type annotation."""
    hints = typing.get_type_hints(ExportConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ExportConfig)}


def key_error(exc: InputError, source: str) -> InputError:
    """An option's error (it carries the field) rendered with the preset file and key instead of the flag."""
    equals = " =" if exc.has_value else ""
    return InputError(exc.render(lambda name: f"preset {source}: key {name!r}{equals}"))


def _parsed(key: str, value, parse, source: str):
    """A field whose option parses text (``batch``): a TOML string, or an integer taken as its text."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        example = next(f.default for f in dataclasses.fields(ExportConfig) if f.name == key)
        raise InputError(
            f"preset {source}: key {key!r} = {value!r} ({type(value).__name__}): "
            f'expected a string such as "{example}" or an integer'
        )
    try:
        return parse(str(value))
    except InputError as exc:
        raise key_error(exc, source) from None


def _type_name(tp) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, "a path string" if tp is Path else getattr(tp, "__name__", str(tp))
    )


def convert(key: str, value, tp, source: str):
    """A TOML value -> the field's type; InputError naming the key when it does not fit."""
    declared = options().get(key)
    if declared is not None and declared.parse is not None:
        return _parsed(key, value, declared.parse, source)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        alternatives = [a for a in typing.get_args(tp) if a is not type(None)]
        errors = []
        for option in alternatives:
            try:
                return convert(key, value, option, source)
            except InputError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise InputError(f"preset {source}: key {key!r} = {value!r}: expected one of {', '.join(map(repr, allowed))}")
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise InputError(f"preset {source}: key {key!r} = {value!r}: expected a list")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis] or [object]
        return origin(convert(key, v, args[0], source) for v in value)

    def wrong(expected: str):
        return InputError(f"preset {source}: key {key!r} = {value!r} ({type(value).__name__}): expected {expected}")

    if tp is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise wrong("a path string")
        return Path(os.path.expanduser(value))
    if tp is object or (isinstance(tp, type) and isinstance(value, tp)):
        return value
    raise wrong(_type_name(tp))


def load_preset(path: str | os.PathLike) -> dict[str, object]:
    """Read a preset file: {ExportConfig field: value converted to the field's type}."""
    path = Path(path)
    source = str(path)
    if problem := file_problem(path):
        raise InputError("expected a TOML file (see export/README.md)", field="preset", value=source, problem=problem)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid TOML ({exc})", field="preset", value=source) from None
    fields = config_fields()
    values = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(
                f"preset {source}: unknown key {key!r}{hint}: expected ExportConfig fields: {', '.join(fields)}"
            )
        if isinstance(value, dict):
            raise InputError(f"preset {source}: key {key!r} is a table: presets are flat (key = value)")
        values[key] = convert(key, value, fields[key], source)
    return values


def apply_preset(cfg: ExportConfig, values: dict[str, object], given_fields: set[str] | frozenset[str], source: str):
    """``cfg`` (defaults <- the flags given) with the preset's values for every field not given as a flag.

    The result is checked here (``config.check_config``; every check error carries its field): a value the
    check rejects is reported with the preset key that set it, a value given as a flag as that flag. A
    default rejected in combination with another value (``batch`` 1:8:32 with a ``dla_core`` the preset
    set) is reported as its flag after the preset's name: the preset took part in it.
    """
    taken = {k: v for k, v in values.items() if k not in given_fields}
    merged = dataclasses.replace(cfg, **taken)
    try:
        check_config(merged)
    except InputError as exc:
        if exc.field in taken:
            raise key_error(exc, source) from None
        if exc.field in given_fields or not taken:
            raise
        raise InputError(f"with preset {source}: {exc.render(flag_of)}") from None
    return merged
