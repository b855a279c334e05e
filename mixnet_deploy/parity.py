"""The parity harness (``mixnet-parity``): candidates run on the same inputs as a reference, judged by their
precision's tolerance. The comparison math (Metrics, compare, failures) is in :mod:`mixnet_deploy.metrics`;
tolerances live in :mod:`mixnet_deploy.precision_table` (one row per precision) only.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import precision_table
from .accuracy import Accuracy, AccuracyDrop
from .arch import DEFAULT_IMG_SIZE, VARIANT_CHOICES, VARIANTS, get_variant, normalize_variant
from .contract import (
    ENGINE_SUFFIXES,
    META_INPUT_SIZE,
    META_VARIANT,
    META_WEIGHTS_SHA256,
    MODEL_SUFFIXES,
    PIXEL_INPUT,
)
from .errors import InputError
from .metrics import Metrics, compare, failures, required_tolerance, tightest_passing
from .option_fields import INPUTS, MODEL, RUNTIME, choice_metavar, nonempty_path, option, positional, positive_int
from .precision_table import Tolerance

if TYPE_CHECKING:
    from .labels import LabelledImages
    from .runtimes import Runner


# ---------------------------------------------------------------- parity harness (mixnet-parity)

PARITY_SEED = 0  # not the export's verification seed: the harness checks on inputs the export did not see
DEFAULT_RANDOM_N = 16
MAX_RANDOM_N = 65536  # generated batch by batch; more random inputs tell nothing new (ImageNet val has 50,000)
MAX_IMAGES = 256


def judged(runner) -> str | None:
    """The precision whose tolerance judges ``runner``: its file's, or the row for what the runtime computed in
    (OpenVINO bf16 on an FP32 file: FP16's)."""
    return precision_table.judged_precision(runner.precision, runner.inference_precision)


def tolerance_for(precision: str | None, name: str = "candidate") -> Tolerance:
    """The tolerance of a precision's row in :mod:`mixnet_deploy.precision_table`; InputError when unknown."""
    if precision is None:
        raise InputError(f"{name}: no mixnet.precision metadata: expected a model written by mixnet-export")
    known = precision_table.tolerances()
    if precision not in known:
        raise InputError(f"{name}: precision {precision!r} has no tolerance: expected one of {', '.join(known)}")
    return known[precision]


@dataclass(frozen=True)
class ParityResult:
    candidate: dict  # runner.describe()
    precision: str
    tolerance: Tolerance
    metrics: Metrics
    failures: tuple[str, ...]
    tightest_passing: str | None
    notes: tuple[str, ...] = ()
    accuracy: Accuracy | None = None  # against ground-truth labels (parity --labels)
    accuracy_drop: AccuracyDrop | None = None  # reference accuracy - this one's, points, paired bootstrap

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {
            "candidate": self.candidate,
            "precision": self.precision,
            "passed": self.passed,
            "metrics": self.metrics.as_dict(),
            "tolerance": asdict(self.tolerance),
            "failures": list(self.failures),
            "required_tolerance": asdict(required_tolerance(self.metrics)),
            "tightest_passing": self.tightest_passing,
            "notes": list(self.notes),
            "accuracy": self.accuracy.as_dict() if self.accuracy else None,
            "accuracy_drop": self.accuracy_drop.as_dict() if self.accuracy_drop else None,
        }


def run_batched(runner: Runner, x: np.ndarray, batch: int) -> np.ndarray:
    """``runner.run`` over ``x`` in chunks of at most ``batch`` (and the runner's max batch)."""
    step = min(batch, runner.max_batch or batch)
    return np.concatenate([runner.run(x[i : i + step]) for i in range(0, len(x), step)])


def candidate_runtimes() -> tuple[str, ...]:
    """What ``--runtime`` takes: auto (by file type) or a runtime that runs an exported file."""
    from .runtimes import RUNTIMES

    return ("auto", *(r for r in RUNTIMES if r != "torch"))


@dataclass(frozen=True)
class ParityConfig:
    candidates: tuple[str, ...] = positional(".onnx, .engine or .plan file", "CANDIDATE", group=MODEL)
    variant: str | None = option(
        None, "default: the candidates' metadata", metavar=choice_metavar(VARIANTS), group=MODEL
    )
    weights: str | None = option(
        None,
        "the checkpoint the candidates were exported from (or 'timm'); default: the seeded random weights "
        "mixnet-export uses without --weights",
        group=MODEL,
    )
    images: str | None = option(
        None, "folder of images (preprocessed as the metadata says)", metavar="DIR", group=INPUTS, exclusive="source"
    )
    random_n: int = option(
        DEFAULT_RANDOM_N,
        "N seeded random inputs (default {default})",
        flag="--random",
        type=positive_int,
        metavar="N",
        group=INPUTS,
        exclusive="source",
    )
    max_images: int = MAX_IMAGES  # with images: the first ones in sorted order
    img_size: int | None = option(None, "input size; default: the candidates'", type=positive_int, group=MODEL)
    runtime: str = option("auto", "runtime of every candidate (default {default}: by file type)",
                          choices=candidate_runtimes, group=RUNTIME)  # fmt: skip
    batch: int = option(8, "inputs per call (default {default})", type=positive_int, group=RUNTIME)
    seed: int = PARITY_SEED
    labels: str | None = option(
        None,
        "accuracy against ground truth over every image: 'folder' (--images has ImageNet synset subfolders, "
        "n01440764/...) or a CSV of image,class (class index 0-999 or synset)",
        metavar="folder|CSV",
        group=INPUTS,
    )
    predictions: str | None = option(
        None, "write top-5 per image and model (JSON Lines)", type=nonempty_path, metavar="FILE"
    )
    max_top1_drop: float | None = option(
        None, "fail a candidate losing more top-1 points", type=float, metavar="POINTS", group=INPUTS
    )

    @property
    def every_image(self) -> bool:
        """Labels or predictions: evaluate the whole folder (streamed), not the first ``max_images``."""
        return self.labels is not None or self.predictions is not None


@dataclass
class ParityReport:
    reference: dict
    inputs: dict
    results: list[ParityResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reference": self.reference,
            "inputs": self.inputs,
            "results": [r.as_dict() for r in self.results],
        }


def _agreed(values: dict[str, str | None], what: str, field: str) -> str | None:
    """The one value the candidates agree on (None: none has one); InputError on the option ``field`` sets."""
    found = {v for v in values.values() if v}
    if len(found) > 1:
        listing = ", ".join(f"{Path(k).name}: {v}" for k, v in values.items())
        raise InputError(f"candidates disagree on {what} ({listing}): expected one {what} per run", field=field)
    return found.pop() if found else None


def check_sizes(cfg: ParityConfig) -> None:
    """Counts and sizes that would take hours or all memory, refused before any work."""
    from .arch import MAX_IMG_SIZE

    if cfg.batch <= 0:
        raise InputError("expected a positive integer", field="batch", value=cfg.batch)
    if not isinstance(cfg.random_n, int) or not 0 < cfg.random_n <= MAX_RANDOM_N:
        expected = f"expected a number of inputs from 1 to {MAX_RANDOM_N}"
        raise InputError(expected, field="random_n", value=cfg.random_n)
    if cfg.img_size is not None and not 0 < cfg.img_size <= MAX_IMG_SIZE:
        raise InputError(f"expected a size from 1 to {MAX_IMG_SIZE}", field="img_size", value=cfg.img_size)


def random_batches(img_size: int, n: int, seed: int, batch: int, pre=None) -> Iterator[Batch]:
    """``n`` seeded inputs, ``batch`` at a time: standard-normal floats (the values of one ``random_inputs`` call),
    no pixels; with ``pre`` (a candidate takes uint8-nhwc) uniform random uint8 pixels [k, H, W, 3] and their
    floats normalised by ``pre``."""
    from .runtimes import random_inputs

    rng = np.random.default_rng(seed)
    for i in range(0, n, batch):
        k = min(batch, n - i)
        names = [f"random:{j}" for j in range(i, i + k)]
        if pre is None:
            yield names, None, random_inputs((k, 3, img_size, img_size), rng), None
        else:
            pixels = rng.integers(0, 256, (k, img_size, img_size, 3), dtype=np.uint8)
            yield names, pixels, pre.normalize(pixels), None


def variant_and_size(runners: list, variant_given: str | None, size_given: int | None) -> tuple[str, int]:
    """The variant and input size of the run: the candidates' metadata and static shapes, checked against
    ``--variant`` / ``--img-size`` when given (InputError carrying that field)."""
    variant = _agreed({r.name: r.metadata.get(META_VARIANT) for r in runners}, "the variant", "variant")
    if variant_given is not None:
        try:
            wanted = normalize_variant(variant_given)
        except ValueError as exc:
            raise InputError(str(exc), field="variant") from None
        if variant is not None and variant != wanted:
            names = ", ".join(r.name for r in runners)
            expected = f"the candidates ({names}) are {get_variant(variant).model_name}"
            raise InputError(expected, field="variant", value=variant_given)
        variant = wanted
    if variant is None:
        expected = f"the candidates carry no mixnet.variant metadata: expected one of {VARIANT_CHOICES}"
        raise InputError(expected, field="variant", problem="is needed")
    static = {r.name: str(r.input_shape[2]) if r.input_shape[2] else None for r in runners}
    meta_size = {r.name: r.metadata.get(META_INPUT_SIZE) for r in runners}
    fixed = _agreed(static, "the input size", "img_size")
    size = fixed or _agreed(meta_size, "the input size", "img_size")
    img_size = size_given or int(size or DEFAULT_IMG_SIZE)
    if fixed is not None and int(fixed) != img_size:
        raise InputError(f"the candidates take {fixed}x{fixed} inputs only", field="img_size", value=size_given)
    return variant, img_size


def run_parity(cfg: ParityConfig, progress: bool = False) -> ParityReport:
    """Reference (unfolded float32 PyTorch) and every candidate on the same inputs; one result each."""
    from .batching import BatchProfile
    from .runtimes import TorchRunner, make_runner
    from .weights import load_model

    if not cfg.candidates:
        raise InputError("no candidate given: expected one or more .onnx / .engine files")
    check_sizes(cfg)
    found = check_accuracy_options(cfg)
    runners = []
    try:
        for path in cfg.candidates:
            if Path(path).suffix.lower() not in MODEL_SUFFIXES:
                raise InputError(f"candidate {path!r}: expected an .onnx, {' or '.join(ENGINE_SUFFIXES)} file")
            runner = make_runner(path, cfg.runtime, batch=BatchProfile(1, cfg.batch, cfg.batch))
            tolerance_for(judged(runner), runner.name)  # fail before any work
            runners.append(runner)
        variant, img_size = variant_and_size(runners, cfg.variant, cfg.img_size)
        model, info = load_model(variant, cfg.weights)
        check_classes(runners, model.spec.num_classes, info, found, cfg.labels)
        check_weights(runners, info)
        reference = TorchRunner(model, name=f"pytorch {model.spec.model_name} (unfolded, float32)", img_size=img_size)
        ref_info = {**reference.describe(), "weights": info.source, "weights_sha256": info.sha256}
        return evaluate(cfg, found, reference, ref_info, runners, progress)
    finally:
        for runner in runners:
            runner.close()


def check_classes(runners: Sequence[Runner], classes: int, info, found: LabelledImages | None, labels: str | None):
    """Every candidate scores the reference's classes, and every label is one of them (InputError otherwise:
    a shape mismatch would be blamed on the candidate, labels past the classes would score as misses)."""
    from .contract import META_NUM_CLASSES
    from .labels import FOLDER, synset_index

    source = "random weights" if info.is_random else info.source
    for runner in runners:
        have = runner.metadata.get(META_NUM_CLASSES)
        if have is not None and int(have) != classes:
            given = {"problem": "not given"} if info.is_random else {"value": info.source}
            raise InputError(f"expected the checkpoint {runner.name} was exported from: it scores {have} classes, "
                             f"the reference ({source}) {classes}", field="weights", **given)  # fmt: skip
    if found is None or found.labels is None or not len(found.labels):
        return
    if labels == FOLDER and classes != len(synset_index()):
        raise InputError(
            f"expected a CSV of class indices 0-{classes - 1}: synset folders name ImageNet-1k classes (0-999), "
            f"the model has {classes} classes",
            field="labels", value=labels,
        )  # fmt: skip
    top = int(found.labels.max())
    if top >= classes:
        raise InputError(f"expected class indices 0-{classes - 1}: the model has {classes} classes",
                         field="labels", value=labels, problem=f"holds class {top}")  # fmt: skip


def parity_table(result: ParityResult, reference_accuracy: dict | None = None) -> str:
    """The per-candidate table for people: measured value, bound, verdict per criterion (and accuracy)."""
    m, tol, req = result.metrics, result.tolerance, required_tolerance(result.metrics)
    rows = [
        ("max abs error", f"{m.max_abs:.3g}", "<= " + (f"{tol.max_abs:g}" if tol.max_abs is not None else "-"),
         f"{req.max_abs:.3g}"),
        ("max rel error", f"{m.max_rel:.3g}", "-", "-"),
        ("mean cosine", f"{m.mean_cosine:.6f}", f">= {tol.min_mean_cosine}", f"{req.min_mean_cosine:.6f}"),
        ("min cosine", f"{m.min_cosine:.6f}", f">= {tol.min_cosine}", f"{req.min_cosine:.6f}"),
        ("top-1 agreement", f"{m.top1:.3f}", ">= " + (f"{tol.min_top1}" if tol.min_top1 is not None else "-"),
         f"{req.min_top1:.3f}"),
        ("top-5 overlap", f"{m.top5_overlap:.3f}",
         ">= " + (f"{tol.min_top5_overlap}" if tol.min_top5_overlap is not None else "-"),
         f"{req.min_top5_overlap:.3f}"),
    ]  # fmt: skip
    verdict = "PASS" if result.passed else "FAIL: " + "; ".join(result.failures)
    lines = [
        f"{result.candidate['name']}  precision {result.precision}  n={m.n}  {verdict}",
        f"  {'metric':<16} {'measured':>12} {result.precision + ' bound':>14} {'would pass at':>14}",
    ]
    lines += [f"  {a:<16} {b:>12} {c:>14} {d:>14}" for a, b, c, d in rows]
    lines.append(f"  strictest table row passed: {result.tightest_passing or 'none'}")
    if result.accuracy is not None:
        from .accuracy import accuracy_lines

        lines += accuracy_lines(result.accuracy, result.accuracy_drop, reference_accuracy)
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)


# ---------------------------------------------------------------- streaming: inputs, accuracy, predictions


def check_weights(runners: Sequence[Runner], info) -> None:
    """A candidate whose ``mixnet.weights_sha256`` is not the reference's weights, refused before the comparison
    (it could only fail, after the whole run): InputError naming both sha256s and ``--weights``. A candidate
    without the key (a file from elsewhere) is compared."""
    source = "random weights" if info.is_random else info.source
    for runner in runners:
        sha = runner.metadata.get(META_WEIGHTS_SHA256)
        if sha and sha != info.sha256:
            given = {"problem": "not given"} if info.is_random else {"value": info.source}
            raise InputError(f"expected the checkpoint {runner.name} was exported from: its weights have sha256 "
                             f"{sha[:12]}, the reference's ({source}) {info.sha256[:12]}", field="weights",
                             **given)  # fmt: skip


def header_lines(report: ParityReport) -> list[str]:
    """What the candidates were compared with and on, for people: the reference and its weights, the inputs."""
    ref = report.reference
    sha = ref.get("weights_sha256")
    return [f"reference: {ref['name']}, weights {ref['weights']}" + (f" (sha256 {sha[:12]})" if sha else ""),
            "inputs: " + inputs_line(report.inputs)]  # fmt: skip


def inputs_line(inputs: dict) -> str:
    """``ParityReport.inputs`` in words: random arrays (how many, seed) or images (folder, count, preprocessing)."""
    size = f"{inputs['img_size']}x{inputs['img_size']}"
    if inputs["kind"] == "random":
        values = inputs.get("pixels", "float32 standard normal")
        return f"{inputs['n']} seeded random inputs ({values}, seed {inputs['seed']}), {size}"
    pre = inputs["preprocess"]
    numbers = ", ".join(f"{k} {','.join(f'{v:g}' for v in pre[k])}" for k in ("mean", "std"))
    scale = math.floor(pre["size"] / pre["crop_pct"])
    return (f"{inputs.get('n')} image(s) of {inputs['folder']} ({inputs.get('skipped', 'no file skipped')}), "
            f"labels {inputs.get('labels') or 'none'}; resized to {scale} ({pre['interpolation']}), centre crop "
            f"{size}, {numbers}")  # fmt: skip


def check_outputs(cfg: ParityConfig, **outputs) -> None:
    """``--predictions`` and the caller's output files (the CLI's ``json``) apart from every input, before any work
    (output_paths.py)."""
    from .output_paths import check_apart, with_manifests

    inputs = {"candidates": with_manifests(cfg.candidates), "weights": cfg.weights, "images": cfg.images,
              "labels": cfg.labels}  # fmt: skip
    check_apart({"predictions": cfg.predictions, **outputs}, inputs, ParityConfig)


def check_accuracy_options(cfg: ParityConfig) -> LabelledImages | None:
    """The images and their labels, read and checked before any work (None: random inputs).

    Labels need an image folder; a top-1 drop bound needs labels.
    """
    from .labels import labelled_images

    if cfg.labels is not None and cfg.images is None:
        raise InputError("expected together with a folder of images", field="labels", value=cfg.labels,
                         problem="without images")  # fmt: skip
    if cfg.max_top1_drop is not None:
        if not (np.isfinite(cfg.max_top1_drop) and cfg.max_top1_drop >= 0):
            raise InputError("expected a finite number of points >= 0", field="max_top1_drop", value=cfg.max_top1_drop)
        if cfg.labels is None:
            raise InputError("expected together with labels (it bounds accuracy against ground truth)",
                             field="max_top1_drop", value=cfg.max_top1_drop, problem="without labels")  # fmt: skip
    return None if cfg.images is None else labelled_images(cfg.images, cfg.labels)


# image names, uint8 pixels [N, H, W, 3] (None: random floats), float32 inputs [N, 3, H, W], labels
Batch = tuple[list[str], "np.ndarray | None", np.ndarray, "np.ndarray | None"]


def input_batches(
    cfg: ParityConfig, found: LabelledImages | None, img_size: int, metadata: dict[str, str], skipped: dict[str, str],
    source: str = "the candidate",
    pixels_needed: bool = False,
) -> tuple[Iterator[Batch], int, dict]:  # fmt: skip
    """(batches, how many inputs at most, what they are): random arrays, or images decoded batch by batch
    (preprocessed as ``metadata`` says; ``source``, the file it is of, is named when it is bad).

    Images: the first ``max_images`` in sorted order, or every image with labels or predictions.
    Unreadable files are recorded in ``skipped`` as the batches are consumed. ``pixels_needed`` (a candidate
    takes uint8-nhwc): random inputs are uint8 pixels, normalised for the float models.
    """
    from .data import Preprocess

    pre = replace(Preprocess.from_metadata(metadata, source), size=img_size) if metadata else Preprocess(size=img_size)
    if found is None:
        inputs = {"kind": "random", "n": cfg.random_n, "seed": cfg.seed, "img_size": img_size}
        if pixels_needed:
            inputs["pixels"] = "uint8, uniform 0..255"
        batches = random_batches(img_size, cfg.random_n, cfg.seed, cfg.batch, pre if pixels_needed else None)
        return batches, cfg.random_n, inputs
    limit = len(found.paths) if cfg.every_image else min(cfg.max_images, len(found.paths))
    inputs = {"kind": "images", "folder": str(found.root), "img_size": img_size, "preprocess": asdict(pre)}
    return _image_batches(found, pre, cfg.batch, limit, skipped), limit, {**inputs, **found.describe()}


def _image_batches(found, pre, batch: int, limit: int, skipped: dict[str, str]) -> Iterator[Batch]:
    from .data import iter_crops

    done = 0
    for index, crops in iter_crops(found.paths, pre, batch, skipped, found.root):
        index, crops = index[: limit - done], crops[: limit - done]
        labels = None if found.labels is None else found.labels[index]
        yield [found.name(i) for i in index], crops, pre.normalize(crops), labels
        done += len(index)
        if done >= limit:
            return


@dataclass
class Streamed:
    """One pass over the inputs: per-batch metrics of each candidate, top-5 classes of every model."""

    n: int = 0
    metrics: list[list[Metrics]] = field(default_factory=list)  # [candidate][batch]
    tops: list[list[np.ndarray]] = field(default_factory=list)  # [model, reference first][batch]
    labels: list[np.ndarray] = field(default_factory=list)


def stream_models(
    reference: Runner, runners: Sequence[Runner], batches: Iterator[Batch], batch: int, total: int,
    progress: bool = False, predictions=None,
) -> Streamed:  # fmt: skip
    """Every model on each batch in turn; memory holds one batch of logits, top-5 indices for the rest."""
    from tqdm import tqdm

    from .accuracy import top5
    from .runner_contract import model_input

    models = ["reference", *(r.describe().get("path", r.name) for r in runners)]
    seen = Streamed(0, [[] for _ in runners], [[] for _ in models])
    with tqdm(total=total, desc="parity", unit="img", file=sys.stderr, leave=False, disable=not progress) as bar:
        for names, pixels, x, labels in batches:
            logits = [run_batched(m, model_input(m, pixels, x), batch) for m in (reference, *runners)]
            for parts, out in zip(seen.metrics, logits[1:]):
                parts.append(compare(logits[0], out))
            tops = [top5(out) for out in logits]
            for kept, top in zip(seen.tops, tops):
                kept.append(top)
            if labels is not None:
                seen.labels.append(labels)
            if predictions is not None:
                predictions.write(names, models, tops, labels)
            seen.n += len(x)
            bar.update(len(x))
    return seen


def evaluate(
    cfg: ParityConfig, found: LabelledImages | None, reference: Runner, ref_info: dict, runners: Sequence[Runner],
    progress: bool = False,
) -> ParityReport:  # fmt: skip
    """Stream the inputs through the reference and the candidates; judge each, with accuracy when labelled."""
    from .accuracy import PredictionsWriter, hits
    from .data import skip_summary

    skipped: dict[str, str] = {}
    first = runners[0]
    pixels_needed = any(r.input_format == PIXEL_INPUT for r in runners)
    batches, total, inputs = input_batches(cfg, found, reference.input_shape[2], first.metadata, skipped,
                                           first.describe().get("path", first.name), pixels_needed)  # fmt: skip
    with PredictionsWriter(cfg.predictions) if cfg.predictions else contextlib.nullcontext() as writer:
        seen = stream_models(reference, runners, batches, cfg.batch, total, progress, writer)
        if not seen.n:
            raise InputError("expected at least one readable image", field="images", value=cfg.images,
                             problem=f"holds no readable image ({skip_summary(skipped)})")  # fmt: skip
    if inputs["kind"] == "images":
        inputs.update(n=seen.n, skipped=skip_summary(skipped))
    labels = np.concatenate(seen.labels) if seen.labels else None
    ref_hit = None if labels is None else hits(np.concatenate(seen.tops[0]), labels)
    ref_info = {**ref_info, "accuracy": None if ref_hit is None else Accuracy.of(ref_hit).as_dict()}
    report = ParityReport(ref_info, inputs)
    for runner, parts, top in zip(runners, seen.metrics, seen.tops[1:]):
        report.results.append(judge(runner, Metrics.merge(parts), (), ref_hit, labels, top, cfg.max_top1_drop))
    return report


def judge(
    runner: Runner, metrics: Metrics, notes: Sequence[str] = (), ref_hit: np.ndarray | None = None,
    labels: np.ndarray | None = None, top: Sequence[np.ndarray] = (), max_top1_drop: float | None = None,
) -> ParityResult:  # fmt: skip
    """One candidate's verdict: its precision's tolerance, and with labels its accuracy and drop."""
    from .accuracy import accuracy_drop, hits

    precision = judged(runner)
    tol = tolerance_for(precision, runner.name)
    bad = failures(metrics, tol)
    acc = drop = None
    if labels is not None:
        hit = hits(np.concatenate(top), labels)
        acc, drop = Accuracy.of(hit), accuracy_drop(ref_hit, hit)
        if max_top1_drop is not None and not drop.top1.points <= max_top1_drop:
            bad.append(f"top-1 drop {drop.top1.points:.2f} points > {max_top1_drop:g}")
    return ParityResult(
        runner.describe(), precision, tol, metrics, tuple(bad), tightest_passing(metrics), tuple(notes),
        acc, drop,
    )  # fmt: skip
