"""``mixnet-predict``: image files -> the top-N class names with their probabilities, from any artifact.

Data flow: :class:`PredictConfig` -> :func:`open_model` (a runner from runtimes.make_runner: ONNX on ONNX
Runtime, an engine on TensorRT, a checkpoint on PyTorch; its preprocessing from the model's metadata, its
input format from its input) -> :func:`image_list` (files and folders; a folder's images are named relative
to it, as ``mixnet-parity --images DIR --predictions`` names them) -> :func:`predict` (decoded batch by batch:
timm's resize + centre crop to uint8 pixels, normalised for a float32-nchw model) -> :class:`Prediction`
per image -> :func:`predictions_table` (for people) or :func:`json_lines` (for machines).

The top-N are numpy's over the logits (softmax probabilities, ties: the lower class first), the rule
``mixnet-parity --predictions`` uses, so the two agree on the same files; a model exported with ``--top-k``
computes the same in its graph (verified at export, graph_io.py). Nothing is written or printed until every
image has been classified: an undecodable file stops the run (exit 2, naming it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import json_text
from .contract import META_INPUT_SIZE, META_NUM_CLASSES
from .errors import InputError
from .option_fields import INPUTS, MODEL, RUNTIME, nonempty_path, option, positional, positive_int

DEFAULT_TOP = 5


def predict_runtimes() -> tuple[str, ...]:
    """What ``--runtime`` takes: auto (by file type) or any runtime (torch runs a checkpoint)."""
    from .runtimes import RUNTIMES

    return ("auto", *RUNTIMES)


@dataclass(frozen=True)
class PredictConfig:
    paths: tuple[str, ...] = positional(
        "MODEL IMAGE|DIR [IMAGE|DIR ...]: the model (.onnx, .engine/.plan, or a .pth/.pt/.safetensors "
        "checkpoint), then image files or folders (JPEG/PNG/WebP, folders searched recursively); with --url "
        "the images only",
        "PATH",
        group=INPUTS,
    )
    top: int = option(DEFAULT_TOP, "classes shown per image (default {default})", type=positive_int, metavar="N",
                      group=MODEL)  # fmt: skip
    class_names: Path | None = option(
        None,
        "class names, one per line, as many as the model's classes; default: the model's (mixnet-export "
        "--class-names), else ImageNet-1k's for 1000 classes",
        type=nonempty_path,
        metavar="FILE",
        group=MODEL,
    )
    runtime: str = option("auto", "runtime (default {default}: by file type)", choices=predict_runtimes,
                          group=RUNTIME)  # fmt: skip
    batch: int = option(8, "images per call (default {default})", type=positive_int, group=RUNTIME)
    url: str | None = option(
        None,
        "classify on a Triton server instead (mixnet-serve, or Triton on a --triton-repo): http://HOST:PORT or "
        "grpc://HOST:PORT; the PATHs are then images only, preprocessed as the served model's config says",
        metavar="URL",
        group=RUNTIME,
    )
    model_name: str | None = option(None, "with --url: the served model's name (mixnet_<variant>)", metavar="NAME",
                                    group=RUNTIME)  # fmt: skip


def check_outputs(cfg: PredictConfig, **outputs) -> None:
    """The caller's output files (the CLI's ``json``) apart from the model, its manifest, the images and the class
    names file, before any work (output_paths.py)."""
    from .output_paths import check_apart, with_manifests

    check_apart(outputs, {"paths": with_manifests(cfg.paths), "class_names": cfg.class_names}, PredictConfig)


@dataclass(frozen=True)
class Prediction:
    image: str
    classes: tuple[int, ...]  # best first
    scores: tuple[float, ...]  # softmax probabilities
    names: tuple[str, ...]

    def as_dict(self, model: str) -> dict:
        return {"image": self.image, "model": model, "classes": list(self.classes), "scores": list(self.scores),
                "names": list(self.names)}  # fmt: skip


# ---------------------------------------------------------------- model and images


def open_model(path: str, runtime: str, batch: int, **opts):
    """(runner, preprocessing, number of classes or None): the model file on its runtime, its timm eval
    preprocessing from the ONNX metadata (an engine: its ONNX beside it; a checkpoint: its variant). ``opts``:
    the runner's own (an engine's ``cuda_graph``)."""
    from .batching import BatchProfile
    from .contract import MODEL_SUFFIXES
    from .data import Preprocess
    from .runtimes import CHECKPOINT_SUFFIXES, make_runner

    suffix = Path(path).suffix.lower()
    if suffix not in (*MODEL_SUFFIXES, *CHECKPOINT_SUFFIXES):
        raise InputError(f"model {path!r}: expected an .onnx, .engine/.plan or .pth/.pt/.safetensors file first")
    if runtime == "torch" and suffix in MODEL_SUFFIXES:
        raise InputError("expected it with a checkpoint (an exported file runs on its own runtime)",
                         field="runtime", value=runtime, problem=f"would run {Path(path).name} with untrained weights")
    runner = make_runner(path, runtime, batch=BatchProfile(1, batch, batch), **opts)
    meta = runner.metadata
    spec = getattr(getattr(runner, "model", None), "spec", None)
    if spec is not None:  # a checkpoint on PyTorch: the variant's own preprocessing
        pre = Preprocess(crop_pct=spec.crop_pct, interpolation=spec.interpolation, mean=spec.mean, std=spec.std)
        return runner, pre, spec.num_classes
    if meta.get(META_INPUT_SIZE):
        return runner, Preprocess.from_metadata(meta), int(meta.get(META_NUM_CLASSES) or 0) or None
    runner.close()
    raise InputError(f"{path}: no mixnet.* preprocessing metadata (an engine needs its ONNX file beside it): "
                     "expected a model written by mixnet-export")  # fmt: skip


def open_remote(cfg: PredictConfig):
    """(runner, preprocessing, number of classes or None) of the model ``--model-name`` on the server ``--url``."""
    from .data import Preprocess
    from .remote_runner import TritonRunner

    if cfg.model_name is None:
        raise InputError("expected --model-name NAME with it (the served model)", field="url", value=cfg.url)
    if cfg.runtime != "auto":
        raise InputError("expected auto with --url (the server runs the model)", field="runtime", value=cfg.runtime)
    runner = TritonRunner(cfg.url, cfg.model_name)
    meta = runner.metadata
    try:
        pre = Preprocess.from_metadata(meta, runner.name)
    except InputError:
        runner.close()
        raise
    return runner, pre, int(meta.get(META_NUM_CLASSES) or 0) or None


def image_list(paths: Sequence[str]) -> list[tuple[str, Path]]:
    """(name, file) of every image: a file as given, a folder's images (recursive, sorted) named relative to
    it. InputError for a path that does not exist and for a folder without images."""
    from .data import find_images

    found = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found += [(str(p.relative_to(path)), p) for p in find_images(path, field="paths")]
        elif path.is_file():
            found.append((text, path))
        else:
            raise InputError(f"image {text!r} does not exist: expected an image file or a folder of images")
    return found


def _batches(images: list[tuple[str, Path]], pre, batch: int) -> Iterator[tuple[list[str], np.ndarray]]:
    from .data import read_crop

    for i in range(0, len(images), batch):
        names, crops = [], []
        for name, path in images[i : i + batch]:
            crop, why, _ = read_crop(path, pre)
            if crop is None:
                raise InputError(f"image {str(path)!r} cannot be decoded ({why}): expected a JPEG, PNG or WebP image")
            names.append(name)
            crops.append(crop)
        yield names, np.stack(crops)


def class_names_for(cfg: PredictConfig, metadata, num_classes: int) -> tuple[str, ...]:
    from .class_names import class_names_of, read_class_names

    if cfg.class_names is not None:
        return read_class_names(cfg.class_names, num_classes)
    return class_names_of(metadata, num_classes)


# ---------------------------------------------------------------- predictions


def predict(cfg: PredictConfig, progress: bool = False) -> tuple[str, list[Prediction]]:
    """(the model's name, one Prediction per image, in the order given)."""
    from tqdm import tqdm

    from .graph_io import top_k_numpy
    from .parity import run_batched
    from .runner_contract import model_input

    if cfg.model_name is not None and cfg.url is None:
        raise InputError("expected --url with it (a model on a server)", field="model_name", value=cfg.model_name)
    if len(cfg.paths) < (1 if cfg.url else 2):
        raise InputError("expected MODEL and at least one IMAGE or DIR", field="paths", value=" ".join(cfg.paths))
    images = image_list(cfg.paths if cfg.url else cfg.paths[1:])  # before the model loads: a wrong path fails fast
    opened = open_remote(cfg) if cfg.url else open_model(cfg.paths[0], cfg.runtime, cfg.batch)
    runner, pre, num_classes = opened
    names = None if num_classes is None else class_names_for(cfg, runner.metadata, num_classes)
    found: list[Prediction] = []
    try:
        with tqdm(total=len(images), desc="predict", unit="img", leave=False, disable=not progress) as bar:
            for image_names, pixels in _batches(images, pre, cfg.batch):
                logits = run_batched(runner, model_input(runner, pixels, pre.normalize(pixels)), cfg.batch)
                if names is None:  # an engine without its ONNX: the classes are known now
                    names = class_names_for(cfg, {}, logits.shape[1])
                scores, classes = top_k_numpy(logits, min(cfg.top, logits.shape[1]))
                for i, image in enumerate(image_names):
                    found.append(Prediction(image, tuple(int(c) for c in classes[i]),
                                            tuple(float(p) for p in scores[i]), tuple(names[c] for c in classes[i])))
                bar.update(len(image_names))
    finally:
        runner.close()
    return runner.name, found


def predictions_table(predictions: Sequence[Prediction], width: int = 48) -> str:
    """For people: per image its top-N, one line each (rank, probability, class index, name)."""
    lines = [f"{'image':<32} {'#':>2} {'prob':>7} {'class':>5}  name"]
    for p in predictions:
        for rank, (c, s, name) in enumerate(zip(p.classes, p.scores, p.names), 1):
            shown = name if len(name) <= width else name[: width - 3] + "..."
            image = (p.image if len(p.image) <= 32 else "..." + p.image[-29:]) if rank == 1 else ""
            lines.append(f"{image:<32} {rank:>2} {s:>7.2%} {c:>5}  {shown}")
    return "\n".join(lines)


def json_lines(predictions: Sequence[Prediction], model: str) -> str:
    """For machines: one JSON object per image (image, model, classes, scores, names)."""
    return "".join(json_text(p.as_dict(model), indent=None) + "\n" for p in predictions)
