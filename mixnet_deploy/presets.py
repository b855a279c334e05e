"""Export presets: small TOML files (``export/*.toml``) of ExportConfig values, read by ``--preset FILE``.

A preset is flat: its keys are ExportConfig field names, found by introspecting the dataclass, so a
field added to ExportConfig is a valid preset key without touching this module. Values are TOML
values of the field's type (strings for paths, ``"1:8:32"`` or an integer for ``batch``). Flags given
on the command line override preset values. Unknown keys, values of the wrong type and values that
the config check rejects are InputErrors naming the preset file and the key.

Data flow: ``load_preset(path)`` -> ``{field: typed value}`` -> ``apply_preset(cli_config, values,
given_fields)`` -> a checked ExportConfig.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import types
import typing
from pathlib import Path

from .batching import BatchProfile, parse_batch_profile
from .errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Command-line flags (their argparse dest) whose ExportConfig field has another name.
FIELD_OF_DEST = {"out": "out_dir", "workspace": "workspace_mib"}
_FLAG_RE = re.compile(r"--([a-z][a-z0-9-]*)")


def config_fields() -> dict[str, object]:
    """ExportConfig field name -> resolved type annotation."""
    from .pipeline import ExportConfig

    hints = typing.get_type_hints(ExportConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ExportConfig)}


def field_of_dest(dest: str) -> str:
    return FIELD_OF_DEST.get(dest, dest)


def _type_name(tp) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, "a path string" if tp is Path else getattr(tp, "__name__", str(tp))
    )


def convert(key: str, value, tp, source: str):
    """A TOML value -> the field's type; InputError naming the key when it does not fit."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        errors = []
        for option in options:
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
    if tp is BatchProfile:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise wrong('"MIN:OPT:MAX" or an integer')
        try:
            return parse_batch_profile(str(value))
        except InputError as exc:
            raise InputError(f"preset {source}: key {key!r}: {exc}") from None
    if tp is object or (isinstance(tp, type) and isinstance(value, tp)):
        return value
    raise wrong(_type_name(tp))


def load_preset(path: str | os.PathLike) -> dict[str, object]:
    """Read a preset file: {ExportConfig field: value converted to the field's type}."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise InputError(f"--preset {source!r} {what}: expected a TOML file (see export/README.md)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--preset {source!r}: not valid TOML ({exc})") from None
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


def _blamed_key(message: str, values: dict) -> str | None:
    """The preset key a config-check message is about: its first ``--flag`` mapped to a field."""
    match = _FLAG_RE.search(message)
    if not match:
        return None
    key = field_of_dest(match.group(1).replace("-", "_"))
    return key if key in values else None


def apply_preset(cfg, values: dict[str, object], given_fields: set[str] | frozenset[str], source: str):
    """``cfg`` (from the command line) with the preset's values for every field not given as a flag.

    The result is checked here (``pipeline.check_config``), so that a value the check rejects is
    reported with the preset key that set it.
    """
    from .pipeline import check_config

    taken = {k: v for k, v in values.items() if k not in given_fields}
    merged = dataclasses.replace(cfg, **taken)
    try:
        check_config(merged)
    except InputError as exc:
        key = _blamed_key(str(exc), taken)
        if key is None:
            raise
        raise InputError(f"preset {source}: key {key!r} = {_show(taken[key])}: {exc}") from None
    return merged


def _show(value) -> str:
    return repr(str(value)) if isinstance(value, (Path, BatchProfile)) else repr(value)
