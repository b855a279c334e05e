"""Outputs kept apart from inputs, for every command (mixnet-export, mixnet-parity, mixnet-bench).

An output (``--json``, ``--predictions``, ``--markdown``, ``--plot``, ``--out``, ``--triton-repo``,
``--timing-cache``) that resolves to an input (the same path after symlinks, or the same file by device and
inode: a hard link), or lies inside an input folder where it would mix with the inputs (``--images`` and
``--calib`` are read recursively for .jpg/.jpeg/.png/.webp files: an output named so would be read back as
an image at the next run; a ``--json`` report beside the images is not), or is the same path as another
output, is refused before any work: an InputError (exit 2) naming both paths. An input value that names no existing
path (``timm``, ``synthetic``, ``folder``, a variant name) is a keyword, not a path, and is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from itertools import combinations
from pathlib import Path

from . import option_fields
from .contract import ENGINE_SUFFIXES, MANIFEST_SUFFIX
from .errors import InputError, show_value

PathLike = str | os.PathLike


def _values(value) -> list[PathLike]:
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else [v for v in value if v is not None]


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:  # one of them does not exist
        return False


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(folder)) in Path(os.path.realpath(path)).parents


def _read_back(path: Path) -> bool:
    """Whether an image folder's reader (data.find_images: recursive, by suffix) would take ``path``."""
    from .data import IMAGE_SUFFIXES

    return path.suffix.lower() in IMAGE_SUFFIXES


def check_apart(outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | Iterable | None],
                config: type | None = None) -> None:  # fmt: skip
    """Refuse an output that is an input, lies inside an input folder, or is another output (see the module
    docstring). Keys are the config fields (or CLI-only option names) the paths came from; ``config`` spells
    them as flags in the message."""

    def flag(name: str) -> str:
        return option_fields.flag_of(name, config)

    given = [(name, Path(v)) for name, v in outputs.items() if v is not None]
    read = [(name, Path(v)) for name, values in inputs.items() for v in _values(values) if os.path.lexists(v)]
    for out_name, out in given:
        for in_name, source in read:
            if _same(out, source):
                problem, why = f"is {flag(in_name)} {show_value(source)}", "writing it would overwrite that input"
            elif source.is_dir() and _inside(out, source) and _read_back(out):
                problem = f"lies inside {flag(in_name)} {show_value(source)}"
                why = "it would be read back as one of that folder's images"
            else:
                continue
            raise InputError(f"expected a path apart from the inputs ({why})", field=out_name, value=str(out),
                             problem=problem)  # fmt: skip
    for (a, path_a), (b, path_b) in combinations(given, 2):
        if _same(path_a, path_b):
            raise InputError("expected a path of its own (one output would overwrite the other)", field=b,
                             value=str(path_b), problem=f"is also {flag(a)} {show_value(path_a)}")  # fmt: skip


def with_manifests(models: Iterable[PathLike]) -> list[PathLike]:
    """Model files and, for engines, their manifests (``x.engine.json``): inputs of parity and bench too."""
    models = list(models)
    return [*models, *(f"{m}{MANIFEST_SUFFIX}" for m in models if str(m).lower().endswith(ENGINE_SUFFIXES))]
