"""Options declared on config dataclass fields, and everything derived from them (the parsers of all commands).

A config field (ExportConfig, ParityConfig, BenchConfig) carries its :class:`Option` in
``dataclasses.field(metadata=...)`` via :func:`option`: help, flag, metavar, choices, argument group,
the argparse type and, for a value given as text (``--batch 1:8:32``), its parser. A field without
an Option (``ParityConfig.seed``) is library-only. :func:`add_options` generates a command's parser
from its config class; the default is declared once, on the field, and shown in help where the text
says ``{default}``; the choices are shown as ``{a,b,c}`` in usage and help.

A config is built as defaults <- given flags: the generated parser leaves a flag that was not given
out of the namespace (``default=argparse.SUPPRESS``), so the namespace is exactly the given flags
(:func:`given_values`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# argument groups of --help, in this order (a group no option of a command names is not shown)
MODEL = "model"
INPUTS = "inputs"
PRECISION = "precision"
ENGINE = "TensorRT engine"
TRITON = "Triton"
MEASUREMENT = "measurement"
RUNTIME = "runtime"
RUN = "run and output"
GROUPS = (MODEL, INPUTS, PRECISION, ENGINE, TRITON, MEASUREMENT, RUNTIME, RUN)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1..65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is over 65535: expected a TCP port")
    return value


NAME_MAX = 255  # bytes per path component on Linux file systems (ext4, XFS, Btrfs, tmpfs)


def nonempty_path(text: str) -> Path:
    """A path option: '' would silently become '.', the current directory; a component over NAME_MAX bytes
    would fail only when the run writes there (ENAMETOOLONG)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is empty: expected a path")
    long = next((part for part in Path(text).parts if len(os.fsencode(part)) > NAME_MAX), None)
    if long is not None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has a component of {len(os.fsencode(long))} bytes: expected at most {NAME_MAX} per name"
        )
    return Path(text)


@dataclass(frozen=True)
class Option:
    """How a config field is given: flag (default ``--`` + the field with dashes), help and argparse details."""

    help: str  # "{default}" in it: the field's default, rendered (show_default)
    flag: str | None = None  # "--out"; for a positional field its metavar-like name ("CANDIDATE")
    metavar: str | None = None  # default: the choices as {a,b}, else the flag in capitals
    type: Callable[[str], object] | None = None  # argparse type: text -> value (argparse reports its errors)
    parse: Callable[[str], object] | None = None  # text -> value raising InputError (flag text, preset string)
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()  # shown in usage; ExportConfig's checked too
    group: str = RUN  # one of GROUPS
    exclusive: str = ""  # fields sharing this name are mutually exclusive on the command line
    positional: bool = False  # one or more values (nargs="+"), given as a tuple


def option(default, help: str, **kwargs):
    return field(default=default, metadata={"option": Option(help, **kwargs)})


def positional(help: str, name: str, default=dataclasses.MISSING, **kwargs):
    """A positional field: one or more values (a tuple), required on the command line."""
    return field(default=default, metadata={"option": Option(help, flag=name, positional=True, **kwargs)})


def options(config: type) -> dict[str, Option]:
    """Field name -> its Option, in declaration order, for the fields a command line gives."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(config) if "option" in f.metadata}


def flag_of(name: str, config: type | None = None) -> str:
    """The command-line flag of a field of ``config``: declared, else ``--`` + the name with dashes."""
    declared = options(config).get(name) if config is not None else None
    return (declared and declared.flag) or "--" + name.replace("_", "-")


def choices_of(opt: Option) -> tuple[str, ...]:
    return tuple(opt.choices() if callable(opt.choices) else opt.choices)


def choice_metavar(choices: Iterable[str]) -> str:
    """("s", "m") -> "{s,m}" (argparse's own spelling of a choice list)."""
    return "{" + ",".join(choices) + "}"


def show_default(value) -> str:
    """A default as a user types it: (1, 8, 32) -> 1,8,32; Path("artifacts") -> ./artifacts."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def field_help(f: dataclasses.Field, opt: Option) -> str:
    default = f.default if f.default is not dataclasses.MISSING else None
    return opt.help.replace("{default}", show_default(default))


def _argument(f: dataclasses.Field, opt: Option) -> tuple[tuple[str, ...], dict]:
    """The add_argument call of one field: (names, keyword arguments)."""
    flag = opt.flag or flag_of(f.name)
    kwargs = {"default": argparse.SUPPRESS, "help": field_help(f, opt)}
    choices = choices_of(opt)
    if opt.positional:
        kwargs.update(nargs="+", metavar=opt.metavar or (choice_metavar(choices) if choices else flag))
        return (f.name,), kwargs
    kwargs["dest"] = f.name
    if f.default is False:
        kwargs["action"] = "store_true"
    elif f.default is True:  # --wait / --no-wait
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        shown = choice_metavar(choices) if choices else flag.lstrip("-").replace("-", "_").upper()
        kwargs["metavar"] = opt.metavar or shown
        if opt.type is not None:
            kwargs["type"] = opt.type
    return (flag,), kwargs


def add_options(parser: argparse.ArgumentParser, config: type) -> dict[str, argparse._ArgumentGroup]:
    """One argparse argument per field of ``config`` that declares an Option, in its group; a flag not given
    stays out of the namespace. Returns the groups by title (the caller adds its CLI-only options to them)."""
    groups = {title: parser.add_argument_group(title) for title in GROUPS}
    exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in dataclasses.fields(config):
        if "option" not in f.metadata:
            continue
        opt: Option = f.metadata["option"]
        target = groups[opt.group]
        if opt.exclusive:
            if opt.exclusive not in exclusive:
                exclusive[opt.exclusive] = target.add_mutually_exclusive_group()
            target = exclusive[opt.exclusive]
        names, kwargs = _argument(f, opt)
        target.add_argument(*names, **kwargs)
    return groups


def given_values(namespace: argparse.Namespace | Mapping[str, object], config: type) -> dict[str, object]:
    """The fields of ``config`` given as flags, as field values (text parsed by the field's ``parse``)."""
    given = vars(namespace) if isinstance(namespace, argparse.Namespace) else dict(namespace)
    declared = options(config)
    values = {}
    for name, value in given.items():
        if name not in declared:
            continue  # a CLI-only option (--preset, --verbose)
        parse = declared[name].parse
        if isinstance(value, list):  # a positional field
            value = tuple(value)
        values[name] = parse(value) if parse is not None and isinstance(value, str) else value
    return values
