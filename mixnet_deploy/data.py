"""Image folders -> ImageNet-preprocessed arrays, for INT8 calibration and held-out verification.

The preprocessing is the one timm evaluates MixNet with, read from the ONNX metadata
(``mixnet.input_size``, ``mixnet.crop_pct``, ``mixnet.interpolation``, ``mixnet.mean``, ``mixnet.std``):
RGB, resize the shorter side to ``floor(size / crop_pct)`` (bicubic), center crop ``size``, scale
to [0, 1], subtract the mean and divide by the std. ``tests/oracles/timm_preprocess.npz`` holds
timm's own transform output for bundled images; the tests compare with it.

Any file may be garbage: a file that is no regular file (a FIFO, a link to ``/dev/zero``: never
opened for a blocking read), is larger than ``MAX_IMAGE_BYTES``, does not decode as an image, is
truncated, is a decompression bomb, has an absurd aspect ratio or float / 32-bit integer pixels is
skipped, and counted with its reason; it never raises. 16-bit greyscale (Pillow's ``I;16`` modes) is
scaled to 8 bits (Pillow's own ``convert("RGB")`` clips it: an all-white crop). An image that decodes
to one colour is kept but warned about. Decoded crops are kept as uint8 (150 KB per 224x224 image) and
normalized per batch.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arch import DEFAULT_IMG_SIZE, IMAGENET_MEAN, IMAGENET_STD
from .contract import META_CROP_PCT, META_INPUT_SIZE, META_INTERPOLATION, META_MEAN, META_STD
from .errors import InputError, mode_problem

log = logging.getLogger("mixnet_deploy")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
MAX_ASPECT = 32.0  # wider than 32:1 is not a photo, and its resize could take gigabytes
MAX_IMAGE_BYTES = 64 * 2**20  # per file: a 100-megapixel JPEG is ~30 MB; larger is no photo for a 224 crop
RESAMPLE = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "nearest": "NEAREST", "lanczos": "LANCZOS"}
SYNTHETIC_SEED = 20240611


@dataclass(frozen=True)
class Preprocess:
    """timm's eval transform for one model: resize shorter side, center crop, normalize."""

    size: int = DEFAULT_IMG_SIZE
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.interpolation not in RESAMPLE:
            raise InputError(f"interpolation {self.interpolation!r}: expected one of {', '.join(RESAMPLE)}")
        if not (isinstance(self.size, int) and self.size > 0) or not 0 < self.crop_pct <= 1:
            raise InputError(
                f"preprocessing size={self.size!r} crop_pct={self.crop_pct!r}: expected size > 0, 0 < crop_pct <= 1"
            )
        finite = all(math.isfinite(v) for v in (*self.mean, *self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or not finite or min(self.std) <= 0:
            raise InputError(
                f"preprocessing mean={self.mean!r} std={self.std!r}: expected 3 finite values each, std > 0"
            )

    @property
    def scale_size(self) -> int:
        return math.floor(self.size / self.crop_pct)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str = "the model") -> Preprocess:
        """From an ONNX model's ``mixnet.*`` metadata_props (see onnx_export.build_metadata); an InputError
        names ``source`` (the file), the key and its value."""
        keys = {  # key: (field, parse, expected)
            META_INPUT_SIZE: ("size", int, "a positive integer"),
            META_CROP_PCT: ("crop_pct", float, "a number in (0, 1]"),
            META_INTERPOLATION: ("interpolation", str, f"one of {', '.join(RESAMPLE)}"),
            META_MEAN: ("mean", _floats, "3 comma-separated finite numbers"),
            META_STD: ("std", _floats, "3 comma-separated finite numbers > 0"),
        }
        values = {}
        for key, (name, parse, expected) in keys.items():
            if key not in meta:
                raise InputError(f"{source}: no {key} metadata: expected {expected} (mixnet-export writes it)")
            try:
                values[name] = parse(meta[key])
                cls(**{name: values[name]})  # this field alone, checked with the others' defaults
            except (ValueError, InputError):
                raise InputError(f"{source}: {key} {meta[key]!r}: expected {expected}") from None
        return cls(**values)

    def normalize(self, crops: np.ndarray) -> np.ndarray:
        """uint8 ``[N, H, W, 3]`` crops -> float32 ``[N, 3, H, W]`` (ToTensor + Normalize, in float32)."""
        x = np.asarray(crops, dtype=np.float32) / np.float32(255.0)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def resized_size(width: int, height: int, scale: int) -> tuple[int, int]:
    """torchvision's Resize(int): the shorter side becomes ``scale``, the longer keeps the aspect ratio."""
    if width <= height:
        return scale, int(scale * height / width)
    return int(scale * width / height), scale


def pixel_problem(img) -> str:
    """Why an opened PIL image's pixels cannot become 8-bit RGB faithfully ("" when they can)."""
    if img.mode == "F":
        return "float pixels (mode F)"
    if img.mode == "I" and img.format != "PNG":  # a PNG's mode I is 16-bit greyscale (older Pillow)
        return "32-bit integer pixels (mode I)"
    return ""


def to_rgb(img):
    """A PIL image as 8-bit RGB; 16-bit greyscale scaled by 255/65535 (rounded), where ``convert`` would clip."""
    from PIL import Image

    if img.mode == "I" or img.mode.startswith("I;16"):
        wide = np.asarray(img).astype(np.int64)
        img = Image.fromarray(((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8), "L")
    return img.convert("RGB")


def crop_image(img, pre: Preprocess) -> np.ndarray:
    """A PIL image -> uint8 ``[size, size, 3]``: RGB, resize shorter side, center crop (timm eval)."""
    from PIL import Image

    img = to_rgb(img)
    w, h = resized_size(*img.size, pre.scale_size)
    img = img.resize((w, h), getattr(Image.Resampling, RESAMPLE[pre.interpolation]))
    top, left = int(round((h - pre.size) / 2.0)), int(round((w - pre.size) / 2.0))
    img = img.crop((left, top, left + pre.size, top + pre.size))
    return np.asarray(img, dtype=np.uint8)


def decode(data: bytes, pre: Preprocess) -> tuple[np.ndarray | None, str]:
    """Bytes -> (uint8 crop, "") or (None, why it was skipped). Never raises for bad image data."""
    import io

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w < 1 or h < 1:
                    return None, "empty image"
                if max(w, h) / min(w, h) > MAX_ASPECT:
                    return None, f"aspect ratio over {MAX_ASPECT:g}:1"
                if why := pixel_problem(img):
                    return None, why
                img.load()
                return crop_image(img, pre), ""
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, "too many pixels (decompression bomb guard)"
    except Image.UnidentifiedImageError:
        return None, "not an image"
    except MemoryError:
        return None, "out of memory while decoding"
    except Exception as exc:  # Pillow's decoders raise OSError, ValueError, SyntaxError, struct.error, ...
        return None, f"undecodable ({type(exc).__name__})"


def find_images(root: str | os.PathLike, field: str = "calib") -> list[Path]:
    """All JPEG/PNG/WebP files under ``root`` (recursive, symlinked folders not followed), sorted.

    ``field`` is the option that named the folder (``calib``; parity's ``images``): errors name it.
    """
    root = Path(root)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        alternative = f", or {SYNTHETIC!r}" if field == "calib" else ""
        expected = f"expected a folder of JPEG/PNG/WebP images{alternative}"
        raise InputError(expected, field=field, value=root, problem=what)
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        problem = "holds no .jpg/.jpeg/.png/.webp files"
        raise InputError("expected a folder of images", field=field, value=root, problem=problem)
    return sorted(found)


@dataclass
class ImageSet:
    """Decoded crops with where they came from; ``ids`` are (relative path, sha256) for cache keys."""

    crops: np.ndarray  # uint8 [N, size, size, 3]
    ids: list[tuple[str, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # relative path -> reason
    constant: list[str] = field(default_factory=list)  # images that decode to one colour (kept, warned about)

    def __len__(self) -> int:
        return len(self.crops)

    def skip_summary(self) -> str:
        return skip_summary(self.skipped)


def skip_summary(skipped: Mapping[str, str]) -> str:
    """``{file: reason}`` -> "N unreadable file(s) skipped: 2 not an image, ..." (or "no file skipped")."""
    if not skipped:
        return "no file skipped"
    counts = Counter(skipped.values())
    return f"{len(skipped)} unreadable file(s) skipped: " + ", ".join(f"{n} {why}" for why, n in counts.items())


def read_image_file(path: Path, cap: int | None = None) -> tuple[bytes, str]:
    """(the bytes of a regular file of at most ``cap`` bytes, "") or (b"", why not). Never blocks on a FIFO
    (opened non-blocking, then checked), never reads a device; never raises for bad files.
    ``cap``: default ``MAX_IMAGE_BYTES``."""
    cap = MAX_IMAGE_BYTES if cap is None else cap
    over = f"over the {cap / 2**20:g} MiB cap" if cap % 2**20 == 0 else f"over the {cap:,}-byte cap"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        return b"", f"unreadable ({exc.strerror or type(exc).__name__})"
    try:
        st = os.fstat(fd)
        if problem := mode_problem(st.st_mode):
            return b"", problem.removeprefix("is ")
        if st.st_size > cap:
            return b"", over
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(cap + 1)  # a file growing while read is still capped
    except OSError as exc:
        return b"", f"unreadable ({exc.strerror or type(exc).__name__})"
    finally:
        os.close(fd)
    if len(data) > cap:
        return b"", over
    return data, ""


def read_crop(path: Path, pre: Preprocess) -> tuple[np.ndarray | None, str, bytes]:
    """A file -> (uint8 crop, "", its bytes) or (None, why it was skipped, b""). Never raises for bad files."""
    data, why = read_image_file(Path(path))
    if why:
        return None, why, b""
    crop, why = decode(data, pre)
    return crop, why, data


def is_constant(crop: np.ndarray) -> bool:
    """One colour over the whole crop: a blank, or an image whose pixels were lost in decoding."""
    return bool((crop == crop.reshape(-1, crop.shape[-1])[0]).all())


def warn_constant(names: Sequence[str]) -> None:
    if names:
        shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
        log.warning("WARNING: %d image(s) decode to a single colour: %s; check their encoding and bit depth",
                    len(names), shown)  # fmt: skip


def iter_crops(
    paths: Sequence[Path], pre: Preprocess, batch: int, skipped: dict[str, str], root: Path | None = None
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Decode files in order, ``batch`` usable ones at a time: (their indices in ``paths``, uint8 crops).

    Only one batch of crops is held at a time (streaming over 50,000 ImageNet images); unreadable files
    are recorded in ``skipped`` (relative path -> reason) and left out; one-colour images are warned about
    batch by batch.
    """
    index, crops, constant = [], [], []
    for i, path in enumerate(paths):
        name = str(path.relative_to(root)) if root else str(path)
        crop, why, _ = read_crop(path, pre)
        if crop is None:
            skipped[name] = why
            continue
        index.append(i)
        crops.append(crop)
        if is_constant(crop):
            constant.append(name)
        if len(crops) == batch:
            warn_constant(constant)
            yield index, np.stack(crops)
            index, crops, constant = [], [], []
    if crops:
        warn_constant(constant)
        yield index, np.stack(crops)


def load_images(
    paths: Sequence[Path], pre: Preprocess, limit: int | None = None, root: Path | None = None, quiet: bool = False
) -> ImageSet:
    """Decode files in order until ``limit`` images are usable; unreadable ones are skipped and counted."""
    crops, ids, skipped = [], [], {}
    bar = _progress(limit or len(paths), "images", quiet)
    try:
        for path in paths:
            if limit is not None and len(crops) >= limit:
                break
            name = str(path.relative_to(root)) if root else str(path)
            crop, why, data = read_crop(path, pre)
            if crop is None:
                skipped[name] = why
                continue
            crops.append(crop)
            ids.append((name, hashlib.sha256(data).hexdigest()))
            bar.update(1)
    finally:
        bar.close()
    constant = [name for (name, _), crop in zip(ids, crops) if is_constant(crop)]
    warn_constant(constant)
    arr = np.stack(crops) if crops else np.zeros((0, pre.size, pre.size, 3), np.uint8)
    return ImageSet(arr, ids, skipped, constant)


BUILTIN_PHOTOS = Path(__file__).resolve().parent / "verify_images"  # README.md there: sources and licences


def builtin_photos(pre: Preprocess) -> ImageSet:
    """The photos shipped in the package (8 public-domain / CC0 pictures, <= 160 px, 55 KB): what every precision
    is verified on when the user gives no photos, preprocessed as any image."""
    return load_images(find_images(BUILTIN_PHOTOS), pre, root=BUILTIN_PHOTOS, quiet=True)


def shuffled(paths: Sequence[Path], seed: int = 0) -> list[Path]:
    """A seeded permutation, so a class-per-folder tree is sampled across classes, reproducibly."""
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[i] for i in order]


def synthetic_crops(n: int, pre: Preprocess, seed: int = SYNTHETIC_SEED) -> ImageSet:
    """Smooth random colour fields (uint8): a smoke-test stand-in for photos, never a calibration set."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(n, 3, 8, 8)).astype(np.float32)
    reps = -(-pre.size // 8)
    fields = np.kron(coarse, np.ones((1, 1, reps, reps), np.float32))[:, :, : pre.size, : pre.size]
    noise = rng.normal(0, 12, size=fields.shape).astype(np.float32)
    crops = np.clip(fields + noise, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return ImageSet(np.ascontiguousarray(crops), [(f"synthetic:{seed}:{i}", "") for i in range(n)])


class CalibrationReader:
    """ONNX Runtime calibration data reader: ``get_next()`` -> ``{"input": float32 batch}`` or None.

    ORT's ``CalibrationDataReader`` is an ABC that accepts any class with ``get_next`` (its
    ``__subclasshook__``), so this module needs no onnxruntime import.
    """

    def __init__(self, images: ImageSet, pre: Preprocess, batch_size: int = 8, input_name: str = "input"):
        self.images, self.pre, self.batch_size, self.input_name = images, pre, batch_size, input_name
        self._next = 0

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        self.rewind()
        while (batch := self.get_next()) is not None:
            yield batch

    def rewind(self) -> None:
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.images):
            return None
        crops = self.images.crops[self._next : self._next + self.batch_size]
        self._next += len(crops)
        return {self.input_name: self.pre.normalize(crops)}


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False, disable=quiet or None)


SYNTHETIC = "synthetic"
HELD_OUT_MAX = 16


@dataclass
class CalibrationSets:
    """Calibration images and held-out verification images (never the same files)."""

    calib: ImageSet
    held_out: ImageSet
    source: str  # the folder, or "synthetic"
    found: int = 0  # image files found in the folder
    skipped: dict[str, str] = field(default_factory=dict)
    held_out_labels: np.ndarray | None = None  # --labels: the class of every held-out image

    @property
    def synthetic(self) -> bool:
        return self.source == SYNTHETIC

    def counts(self, asked: int) -> dict[str, int]:
        """What the report records of a calibration: images asked for, found in the folder, used, held out."""
        return {"asked": asked, "found": self.found, "calibrated": len(self.calib), "held_out": len(self.held_out)}

    def shortfall(self, asked: int) -> str:
        """One line when the folder had fewer images than ``asked`` calibrate on (else ""): asked, found, used."""
        if self.synthetic or len(self.calib) >= asked:
            return ""
        return (f"WARNING: calibration asked for {asked} images, {self.source} has {self.found} image files; "
                f"using {len(self.calib)} to calibrate + {len(self.held_out)} held out for verification (fewer "
                "images: less stable INT8 ranges)")  # fmt: skip

    def summary(self) -> str:
        where = "synthetic colour fields (NOT photos)" if self.synthetic else f"{self.source} ({self.found} files)"
        held = f"{len(self.held_out)} held-out" + (" labelled" if self.held_out_labels is not None else "")
        text = f"{len(self.calib)} calibration + {held} images from {where}"
        if self.skipped:
            text += "; " + skip_summary(self.skipped)
        return text


def calibration_sets(
    spec: str, pre: Preprocess, count: int, held_out_max: int = HELD_OUT_MAX, quiet: bool = False,
    holdout: int | None = None, labels: Mapping[str, int] | None = None,
) -> CalibrationSets:  # fmt: skip
    """``--calib DIR|synthetic`` -> calibration images (up to ``count``) and held-out ones.

    Files are visited in a seeded shuffle of the sorted list; the first usable ones are held out, the
    next ``count`` calibrate. Held out: ``holdout`` images when given (``--holdout``; at least one must be
    left to calibrate); with ``labels`` (``--labels``: image path under the folder -> class, labels.py) half
    the readable images or all beyond ``count``, whichever is more, up to ``acceptance.LABELLED_HOLDOUT_MAX``; else up
    to ``held_out_max``, and a fifth of what the folder offers.
    """
    from .acceptance import LABELLED_HOLDOUT_MAX

    if spec == SYNTHETIC:
        held = holdout or held_out_max
        return CalibrationSets(synthetic_crops(count, pre), synthetic_crops(held, pre, SYNTHETIC_SEED + 1), spec)
    root = Path(spec)
    paths = shuffled(find_images(root))
    most = holdout or (LABELLED_HOLDOUT_MAX if labels is not None else held_out_max)
    loaded = load_images(paths, pre, limit=count + most, root=root, quiet=quiet)
    if len(loaded) < 2 or holdout is not None and len(loaded) <= holdout:
        least = 2 if holdout is None else holdout + 1
        raise InputError(
            f"{len(loaded)} readable image(s) of {len(paths)} files ({loaded.skip_summary()}): "
            f"expected at least {least} ({least - 1} held out for verification, one or more to calibrate)",
            field="calib" if holdout is None else "holdout",
            value=spec if holdout is None else holdout,
        )
    if holdout is not None:
        hold = holdout
    elif labels is not None:
        hold = min(LABELLED_HOLDOUT_MAX, max(len(loaded) - count, len(loaded) // 2))
    else:
        hold = min(held_out_max, max(1, len(loaded) // 5)) if len(loaded) < count + held_out_max else held_out_max
    held = ImageSet(loaded.crops[:hold], loaded.ids[:hold])
    calib = ImageSet(loaded.crops[hold : hold + count], loaded.ids[hold : hold + count])
    held_labels = None
    if labels is not None:
        held_labels = np.array([labels[Path(name).as_posix()] for name, _ in held.ids], dtype=np.int64)
    return CalibrationSets(calib, held, str(root), len(paths), loaded.skipped, held_labels)
