"""Class names: the 1,000 ImageNet-1k names shipped with the package, or ``--class-names FILE``.

``imagenet_classes.txt`` holds one name per line in class-index order (timm's order, the sorted WordNet
synsets of ``imagenet_synsets.txt``): each line is timm's description of the class, the synset's WordNet
lemmas from timm's ``timm/data/_info/imagenet_synset_to_lemma.txt`` (``tench, Tinca tinca`` is 0, ``toilet
tissue, toilet paper, bathroom tissue`` is 999). A fine-tuned checkpoint brings its own file, one name per
line; its line count must equal the model's classes. Names given at export are stored in the ONNX metadata
(``mixnet.class_names``) so that mixnet-predict and the Triton labels file find them.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from .contract import META_CLASS_NAMES, META_NUM_CLASSES
from .errors import InputError

CLASSES_FILE = "imagenet_classes.txt"
IMAGENET_CLASSES = 1000


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in timm's index order."""
    return tuple(resources.files(__package__).joinpath(CLASSES_FILE).read_text(encoding="utf-8").splitlines())


def read_class_names(path: str | os.PathLike, num_classes: int | None = None, field: str = "class_names") -> tuple[
        str, ...]:  # fmt: skip
    """One name per line (UTF-8; blank trailing lines ignored); InputError naming the file and both counts when
    ``num_classes`` is given and differs."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise InputError("expected a text file, one class name per line", field=field, value=path, problem=what)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("expected UTF-8 text, one class name per line", field=field, value=path,
                         problem=f"is not UTF-8 (byte {exc.start})") from None  # fmt: skip
    except OSError as exc:
        raise InputError("expected a readable text file", field=field, value=path,
                         problem=f"cannot be read ({exc.strerror})") from None  # fmt: skip
    names = tuple(line.strip() for line in text.rstrip("\n\r ").splitlines())
    if not names or not all(names):
        raise InputError("expected one non-empty class name per line", field=field, value=path,
                         problem="holds an empty line" if names else "is empty")  # fmt: skip
    if num_classes is not None and len(names) != num_classes:
        raise InputError(f"expected {num_classes} lines, one per class of the model", field=field, value=path,
                         problem=f"has {len(names)} lines")  # fmt: skip
    return names


def class_names_of(metadata: Mapping[str, str], num_classes: int | None = None) -> tuple[str, ...]:
    """The names a model's metadata carries; else ImageNet-1k's for 1000 classes; else ``class 0``, ..."""
    n = num_classes if num_classes is not None else int(metadata.get(META_NUM_CLASSES) or IMAGENET_CLASSES)
    stored = metadata.get(META_CLASS_NAMES)
    if stored:
        names = tuple(stored.split("\n"))
        if len(names) == n:
            return names
    if n == IMAGENET_CLASSES:
        return imagenet_classes()
    return tuple(f"class {i}" for i in range(n))
