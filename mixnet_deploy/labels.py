"""Ground-truth labels for ``mixnet-parity --labels``: an ImageNet-layout folder or an ``image,class`` CSV.

Class indices are positions in the sorted list of the 1,000 ImageNet-1k WordNet synsets
(``imagenet_synsets.txt``, shipped with the package; copied from timm's
``timm/data/_info/imagenet_synsets.txt``, the order every ImageNet-1k classifier uses:
``n01440764`` (tench) is 0, ``n15075141`` (toilet tissue) is 999).

Nothing is skipped silently: an image without a label, an unknown synset, a malformed or
duplicate CSV row is an :class:`~mixnet_deploy.errors.InputError` (exit 2); a CSV row whose image
is not in the folder is a counted warning (a label file for the whole of ImageNet val run on a
subset of it).
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .errors import InputError, file_problem

FOLDER = "folder"  # --labels folder: the class is the synset subfolder of --images
SYNSETS_FILE = "imagenet_synsets.txt"
NUM_CLASSES = 1000
EXAMPLES = 3  # offending entries quoted in a message


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k synsets in class-index order (sorted wnids)."""
    return tuple(resources.files(__package__).joinpath(SYNSETS_FILE).read_text().split())


@functools.cache
def synset_index() -> Mapping[str, int]:
    return MappingProxyType({wnid: i for i, wnid in enumerate(imagenet_synsets())})


def class_index(text: str) -> int | None:
    """A class index ``0..999`` or an ImageNet-1k synset -> the index; None when it is neither."""
    text = text.strip()
    if text.isdecimal():
        return int(text) if int(text) < NUM_CLASSES else None
    return synset_index().get(text)


@dataclass(frozen=True)
class LabelledImages:
    """The images to evaluate (sorted), their names relative to ``root`` and their labels (or none)."""

    root: Path
    paths: tuple[Path, ...]
    labels: np.ndarray | None  # int64 [N] class indices; None: no labels given
    source: str  # "folder", the CSV path, or "none"
    warnings: tuple[str, ...] = ()

    def name(self, i: int) -> str:
        return self.paths[i].relative_to(self.root).as_posix()

    def by_name(self) -> dict[str, int]:
        """Image name (relative to ``root``, posix) -> class index; empty without labels."""
        return {} if self.labels is None else {self.name(i): int(c) for i, c in enumerate(self.labels)}

    def describe(self) -> dict:
        return {"labels": self.source, "label_warnings": list(self.warnings)}


def _examples(items) -> str:
    items = list(items)
    more = f", ... ({len(items)} in all)" if len(items) > EXAMPLES else ""
    return ", ".join(repr(str(i)) for i in items[:EXAMPLES]) + more


def folder_labels(root: Path, paths: tuple[Path, ...]) -> np.ndarray:
    """The class of ``root/<wnid>/.../image`` is the index of ``<wnid>``; anything else is an error."""
    index = synset_index()
    parts = [p.relative_to(root).parts for p in paths]
    loose = [Path(*pt) for pt in parts if len(pt) < 2]
    if loose:
        raise InputError(
            "expected every image under a synset subfolder (n01440764/...)", field="labels", value=FOLDER,
            problem=f"with {len(loose)} image(s) directly in {str(root)!r}, no class folder ({_examples(loose)})",
        )  # fmt: skip
    unknown = sorted({pt[0] for pt in parts if pt[0] not in index})
    if unknown:
        raise InputError(
            f"expected subfolders named by the {NUM_CLASSES} ImageNet-1k synsets, such as {imagenet_synsets()[0]}",
            field="labels", value=FOLDER,
            problem=f"with subfolder(s) of {str(root)!r} that are no ImageNet-1k synset ({_examples(unknown)})",
        )  # fmt: skip
    return np.array([index[pt[0]] for pt in parts], dtype=np.int64)


def read_label_csv(path: Path) -> dict[str, tuple[int, int]]:
    """``image,class`` rows (an optional ``image,...`` header) -> {image: (class index, line number)}."""
    rows: dict[str, tuple[int, int]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2:
                    raise InputError(f"{path}:{line}: {len(row)} field(s): expected two, image,class")
                image, cls = (c.strip() for c in row)
                if line == 1 and image.lower() == "image":
                    continue  # header
                index = class_index(cls)
                if index is None:
                    raise InputError(
                        f"{path}:{line}: class {cls!r}: expected an index 0-{NUM_CLASSES - 1} or an ImageNet-1k "
                        f"synset such as {imagenet_synsets()[0]}"
                    )
                key = Path(image).as_posix()
                if key in rows:
                    raise InputError(f"{path}:{line}: {image!r} is labelled again (first on line {rows[key][1]})")
                rows[key] = (index, line)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason}): expected a CSV of image,class") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a CSV file ({exc}): expected rows image,class") from None
    if not rows:
        raise InputError(f"{path}: no label rows: expected a CSV of image,class")
    return rows


def csv_labels(path: Path, root: Path, paths: tuple[Path, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels from a CSV; an image is named by its path under ``root``, with or without its suffix."""
    rows = read_label_csv(path)
    labels, used, missing = [], set(), []
    for p in paths:
        rel = p.relative_to(root).as_posix()
        key = rel if rel in rows else rel[: -len(p.suffix)] if p.suffix else rel
        if key not in rows:
            missing.append(rel)
            continue
        if key in used:
            raise InputError(f"{path}:{rows[key][1]}: {key!r} matches more than one image under {str(root)!r}")
        used.add(key)
        labels.append(rows[key][0])
    if missing:
        raise InputError(
            f"{len(missing)} of {len(paths)} image(s) have no row in {str(path)!r} ({_examples(missing)}): "
            "expected a label for every image under the image folder"
        )
    warnings = ()
    if len(rows) > len(used):
        absent = [k for k in rows if k not in used]
        warnings = (f"{len(absent)} labelled image(s) of {str(path)!r} are not in the folder ({_examples(absent)})",)
    return np.array(labels, dtype=np.int64), warnings


def labelled_images(images: str | os.PathLike, labels: str | None = None) -> LabelledImages:
    """The images under a folder (sorted, recursive) and, with ``labels`` ('folder' or a CSV), their classes."""
    from .data import find_images

    root = Path(images)
    paths = tuple(find_images(root, field="images"))  # InputErrors name the images option
    if labels is None:
        return LabelledImages(root, paths, None, "none")
    if labels == FOLDER:
        return LabelledImages(root, paths, folder_labels(root, paths), FOLDER)
    csv_path = Path(labels)
    if problem := file_problem(csv_path):
        raise InputError(f"expected {FOLDER!r} or a CSV file of image,class", field="labels", value=labels,
                         problem=problem)  # fmt: skip
    found, warnings = csv_labels(csv_path, root, paths)
    return LabelledImages(root, paths, found, str(csv_path), warnings)
