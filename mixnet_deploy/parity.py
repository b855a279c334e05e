"""Output comparison: measurements as values, judged by the precision's tolerance.

Tolerances live in :mod:`mixnet_deploy.precisions` (one row per precision) only: the export
verification, ``mixnet-parity`` and the tests all read that table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import precisions
from .engine import ENGINE_SUFFIXES
from .errors import InputError
from .precisions import Tolerance

if TYPE_CHECKING:
    from .runtimes import Runner


@dataclass(frozen=True)
class Metrics:
    n: int
    max_abs: float
    max_rel: float
    mean_cosine: float
    min_cosine: float
    top1: float
    top5_overlap: float

    def as_dict(self) -> dict:
        return asdict(self)


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def compare(reference: np.ndarray, candidate: np.ndarray) -> Metrics:
    """Compare (N, classes) logits. Both are cast to float64 first."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape}, candidate {out.shape}")
    diff = np.abs(out - ref)
    denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = np.where(denom > 0, np.sum(ref * out, axis=1) / np.maximum(denom, 1e-300), 0.0)
    t5r, t5o = _topk(ref, 5), _topk(out, 5)
    overlap = np.mean([len(set(a) & set(b)) / t5r.shape[1] for a, b in zip(t5r, t5o)])
    return Metrics(
        n=len(ref),
        max_abs=float(diff.max()),
        max_rel=float((diff / np.maximum(np.abs(ref), 1e-6)).max()),
        mean_cosine=float(cos.mean()),
        min_cosine=float(cos.min()),
        top1=float(np.mean(ref.argmax(1) == out.argmax(1))),
        top5_overlap=float(overlap),
    )


def failures(metrics: Metrics, tol: Tolerance) -> list[str]:
    """What exceeds the tolerance, one readable item each; empty when it passes."""
    bad = []
    if tol.max_abs is not None and not metrics.max_abs <= tol.max_abs:
        bad.append(f"max abs error {metrics.max_abs:.3g} > {tol.max_abs:g}")
    if not metrics.min_cosine >= tol.min_cosine:
        bad.append(f"min cosine {metrics.min_cosine:.6f} < {tol.min_cosine}")
    if not metrics.mean_cosine >= tol.min_mean_cosine:
        bad.append(f"mean cosine {metrics.mean_cosine:.6f} < {tol.min_mean_cosine}")
    if tol.min_top1 is not None and not metrics.top1 >= tol.min_top1:
        bad.append(f"top-1 agreement {metrics.top1:.3f} < {tol.min_top1}")
    if tol.min_top5_overlap is not None and not metrics.top5_overlap >= tol.min_top5_overlap:
        bad.append(f"top-5 overlap {metrics.top5_overlap:.3f} < {tol.min_top5_overlap}")
    return bad


# ---------------------------------------------------------------- parity harness (mixnet-parity)

log = logging.getLogger("mixnet_deploy")
PARITY_SEED = 0  # not the export's verification seed: the harness checks on inputs the export did not see
DEFAULT_RANDOM_N = 16
MAX_IMAGES = 256


def tolerance_for(precision: str | None, name: str = "candidate") -> Tolerance:
    """The tolerance of a precision's row in :mod:`mixnet_deploy.precisions`; InputError when unknown or missing."""
    if precision is None:
        raise InputError(f"{name}: no mixnet.precision metadata: expected a model written by mixnet-export")
    known = precisions.tolerances()
    if precision not in known:
        raise InputError(f"{name}: precision {precision!r} has no tolerance: expected one of {', '.join(known)}")
    return known[precision]


def tightest_passing(metrics: Metrics) -> str | None:
    """The strictest precision row whose tolerance these metrics pass (None: none passes).

    Rows are ordered by their cosine bound, the one criterion every row has.
    """
    rows = sorted(precisions.tolerances().items(), key=lambda kv: (-kv[1].min_cosine, -kv[1].min_mean_cosine))
    return next((name for name, tol in rows if not failures(metrics, tol)), None)


def required_tolerance(metrics: Metrics) -> Tolerance:
    """The tightest tolerance these metrics would have passed (the measured values as bounds)."""
    return Tolerance(
        max_abs=metrics.max_abs,
        min_cosine=metrics.min_cosine,
        min_mean_cosine=metrics.mean_cosine,
        min_top1=metrics.top1,
        min_top5_overlap=metrics.top5_overlap,
    )


@dataclass(frozen=True)
class ParityResult:
    candidate: dict  # runner.describe()
    precision: str
    tolerance: Tolerance
    metrics: Metrics
    failures: tuple[str, ...]
    tightest_passing: str | None
    notes: tuple[str, ...] = ()

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
        }


def run_batched(runner: Runner, x: np.ndarray, batch: int) -> np.ndarray:
    """``runner.run`` over ``x`` in chunks of at most ``batch`` (and the runner's max batch)."""
    step = min(batch, runner.max_batch or batch)
    return np.concatenate([runner.run(x[i : i + step]) for i in range(0, len(x), step)])


def compare_runner(
    reference_logits: np.ndarray, runner: Runner, x: np.ndarray, batch: int = 8, notes: Sequence[str] = ()
) -> ParityResult:
    """Run one candidate on ``x`` and judge it against the reference logits by its own precision."""
    precision = runner.precision
    tol = tolerance_for(precision, runner.name)
    metrics = compare(reference_logits, run_batched(runner, x, batch))
    return ParityResult(
        runner.describe(), precision, tol, metrics, tuple(failures(metrics, tol)), tightest_passing(metrics),
        tuple(notes),
    )  # fmt: skip


@dataclass(frozen=True)
class ParityConfig:
    candidates: tuple[str, ...]
    variant: str | None = None  # None: from the candidates' metadata
    weights: str | None = None  # None: the seeded random init mixnet-export uses without --weights
    images: str | None = None  # folder of images; else seeded random inputs
    random_n: int = DEFAULT_RANDOM_N
    max_images: int = MAX_IMAGES  # with images: the first ones in sorted order
    img_size: int | None = None  # None: from the candidates
    runtime: str = "auto"  # runtime for every candidate (auto: by file type)
    batch: int = 8
    seed: int = PARITY_SEED


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


def _agreed(values: dict[str, str | None], what: str, flag: str) -> str | None:
    found = {v for v in values.values() if v}
    if len(found) > 1:
        listing = ", ".join(f"{Path(k).name}: {v}" for k, v in values.items())
        raise InputError(f"candidates disagree on {what} ({listing}): expected one {what} per run ({flag})")
    return found.pop() if found else None


def parity_inputs(
    img_size: int, images: str | os.PathLike | None = None, n: int = DEFAULT_RANDOM_N, seed: int = PARITY_SEED,
    metadata: dict[str, str] | None = None,
) -> tuple[np.ndarray, dict]:  # fmt: skip
    """Inputs: up to ``n`` preprocessed images from a folder, or ``n`` seeded standard-normal arrays."""
    if images is None:
        if n <= 0:
            raise InputError(f"--random {n}: expected a positive number of inputs")
        from .runtimes import random_inputs

        x = random_inputs((n, 3, img_size, img_size), seed)
        return x, {"kind": "random", "n": n, "seed": seed, "img_size": img_size}
    folder = Path(images)
    if not folder.is_dir():
        raise InputError(f"--images {str(images)!r}: expected a folder of images")
    from dataclasses import replace

    from .data import Preprocess, find_images, load_images

    try:
        paths = find_images(folder)
    except InputError:
        raise InputError(
            f"--images {str(images)!r} holds no .jpg/.jpeg/.png/.webp file: expected a folder of images"
        ) from None
    pre = replace(Preprocess.from_metadata(metadata), size=img_size) if metadata else Preprocess(size=img_size)
    found = load_images(paths, pre, limit=n, root=folder, quiet=True)
    if not len(found):
        raise InputError(f"--images {str(images)!r}: no readable image ({found.skip_summary()})")
    info = {"n": len(found), "skipped": found.skip_summary(), "preprocess": asdict(pre)}
    return pre.normalize(found.crops), {"kind": "images", "folder": str(folder), "img_size": img_size, **info}


def run_parity(cfg: ParityConfig, progress: bool = False) -> ParityReport:
    """Reference (unfolded float32 PyTorch) and every candidate on the same inputs; one result each."""
    from .batching import BatchProfile
    from .runtimes import TorchRunner, make_runner
    from .weights import load_model

    if not cfg.candidates:
        raise InputError("no candidate given: expected one or more .onnx / .engine files")
    if cfg.batch <= 0:
        raise InputError(f"batch {cfg.batch}: expected a positive integer")
    runners = []
    try:
        for path in cfg.candidates:
            if Path(path).suffix.lower() not in (".onnx", *ENGINE_SUFFIXES):
                raise InputError(f"candidate {path!r}: expected an .onnx, {' or '.join(ENGINE_SUFFIXES)} file")
            runner = make_runner(path, cfg.runtime, batch=BatchProfile(1, cfg.batch, cfg.batch))
            tolerance_for(runner.precision, runner.name)  # fail before any work
            runners.append(runner)
        variant = _agreed({r.name: r.metadata.get("mixnet.variant") for r in runners}, "the variant", "--variant")
        if cfg.variant is not None:
            from .arch import normalize_variant

            try:
                wanted = normalize_variant(cfg.variant)
            except ValueError as exc:
                raise InputError(str(exc)) from None
            if variant is not None and variant != wanted:
                names = ", ".join(r.name for r in runners)
                raise InputError(f"--variant {cfg.variant}: the candidates ({names}) are MixNet-{variant.upper()}")
            variant = wanted
        if variant is None:
            raise InputError("the candidates carry no mixnet.variant metadata: pass --variant (s, m or l)")
        static = {r.name: str(r.input_shape[2]) if r.input_shape[2] else None for r in runners}
        meta_size = {r.name: r.metadata.get("mixnet.input_size") for r in runners}
        size = _agreed(static, "the input size", "--img-size") or _agreed(meta_size, "the input size", "--img-size")
        img_size = cfg.img_size or int(size or 224)
        fixed = _agreed(static, "the input size", "--img-size")
        if fixed is not None and int(fixed) != img_size:
            raise InputError(f"--img-size {cfg.img_size}: the candidates take {fixed}x{fixed} inputs only")

        model, info = load_model(variant, cfg.weights)
        reference = TorchRunner(model, name=f"pytorch mixnet_{variant} (unfolded, float32)", img_size=img_size)
        n = cfg.max_images if cfg.images else cfg.random_n
        x, inputs = parity_inputs(img_size, cfg.images, n, cfg.seed, runners[0].metadata)
        ref = run_batched(reference, x, cfg.batch)
        report = ParityReport({**reference.describe(), "weights": info.source, "weights_sha256": info.sha256}, inputs)
        for runner in _iter(runners, progress):
            notes = []
            sha = runner.metadata.get("mixnet.weights_sha256")
            if sha and sha != info.sha256:
                notes.append(
                    f"exported from other weights (sha256 {sha[:12]}, reference {info.sha256[:12]} from "
                    f"{info.source}): pass the checkpoint it was exported from with --weights"
                )
                log.warning("%s: %s", runner.name, notes[-1])
            report.results.append(compare_runner(ref, runner, x, cfg.batch, notes))
        return report
    finally:
        for runner in runners:
            runner.close()


def _iter(items: list, progress: bool):
    if not progress:
        return items
    import sys

    from tqdm import tqdm

    return tqdm(items, desc="parity", unit="model", file=sys.stderr, leave=False)


def parity_table(result: ParityResult) -> str:
    """The per-candidate table for people: measured value, bound, verdict per criterion."""
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
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines)
