"""One row per artifact for ``mixnet-bench --images DIR [--labels ...]``: status, precision, runtime, size,
accuracy and latency per batch (and energy per image on a Jetson), as Ultralytics' ``yolo benchmark`` lists
its export formats.

Accuracy reuses the parity harness: the models of one variant, input size and weights are streamed over
the images together (:func:`mixnet_deploy.parity.stream_models`, preprocessed as their FP32 model's metadata
says), and each is compared with that **FP32 model** (the first FP32 file given for them) by
:func:`mixnet_deploy.metrics.compare`; with labels each also gets top-1 / top-5 (:mod:`mixnet_deploy.accuracy`).
A model is **refused** when its runtime cannot load it (the reason is the error line) or when it misses its
precision's tolerance against the FP32 model (``precision_table.py``, as ``mixnet-parity`` judges it).
PyTorch runners of a variant name or of an ONNX file's variant (``--runtime torch``) carry default-init
weights: their latency is measured, their accuracy is not (``latency only``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .contract import META_WEIGHTS_SHA256, PIXEL_INPUT
from .errors import InputError

if TYPE_CHECKING:
    from .labels import LabelledImages
    from .runner_contract import Runner

REFERENCE_PRECISION = "fp32"


@dataclass
class Artifact:
    """A model file (or variant name) under one runtime: its runner, or why the runtime refused it."""

    model: str
    runtime: str
    runner: Runner | None = None
    refused: str | None = None
    accuracy: dict = field(default_factory=dict)  # filled by evaluate()

    @property
    def latency_only(self) -> bool:
        """Default-init PyTorch: a variant name, or an ONNX file's variant under --runtime torch."""
        from .runtimes import CHECKPOINT_SUFFIXES

        r = self.runner
        return r is not None and r.runtime.startswith("torch") and Path(self.model).suffix not in CHECKPOINT_SUFFIXES


def _group_key(artifact: Artifact) -> tuple:
    from .parity import variant_and_size

    runner = artifact.runner
    return (*variant_and_size([runner], None, None), runner.metadata.get(META_WEIGHTS_SHA256))


def evaluate(artifacts: Sequence[Artifact], found: LabelledImages, batch: int, progress: bool = False) -> dict:
    """Fill each artifact's ``accuracy``; returns what the images were (folder, count, labels, skipped)."""
    groups: dict[tuple, list[Artifact]] = {}
    for a in artifacts:
        if a.runner is None:
            continue
        if a.latency_only:
            a.accuracy = {"note": "latency only: default-init PyTorch weights"}
            continue
        try:
            groups.setdefault(_group_key(a), []).append(a)
        except InputError as exc:  # no variant metadata: a file not written by mixnet-export
            a.refused = str(exc)
    described: dict = {"folder": str(found.root), **found.describe()}
    for (_, img_size, _), group in groups.items():
        described.update(_evaluate_group(group, found, img_size, batch, progress))
    return described


def _evaluate_group(group: list[Artifact], found: LabelledImages, img_size: int, batch: int, progress: bool):
    from .accuracy import Accuracy, hits
    from .data import skip_summary
    from .metrics import Metrics, failures
    from .parity import ParityConfig, input_batches, judged, stream_models, tolerance_for

    reference = next((a for a in group if a.runner.precision == REFERENCE_PRECISION), None)
    first = reference or group[0]
    others = [a for a in group if a is not first]
    cfg = ParityConfig((), images=str(found.root), batch=batch, max_images=len(found.paths))  # every image
    skipped: dict[str, str] = {}
    source = first.runner.describe().get("path", first.runner.name)
    pixels = any(a.runner.input_format == PIXEL_INPUT for a in group)
    batches, total, _ = input_batches(cfg, found, img_size, first.runner.metadata, skipped, source, pixels)
    seen = stream_models(first.runner, [a.runner for a in others], batches, batch, total, progress)
    if not seen.n:
        raise InputError("expected at least one readable image", field="images", value=str(found.root),
                         problem=f"holds no readable image ({skip_summary(skipped)})")  # fmt: skip
    labels = np.concatenate(seen.labels) if seen.labels else None
    for a, top in zip([first, *others], seen.tops):
        acc = {"images": seen.n, "reference": None if reference is None else reference.runner.name}
        if labels is not None:
            acc.update(Accuracy.of(hits(np.concatenate(top), labels)).as_dict())
        a.accuracy = acc
    for a, parts in zip(others, seen.metrics):
        if reference is None:
            continue
        m = Metrics.merge(parts)
        a.accuracy.update(agreement_top1=m.top1, top5_overlap=m.top5_overlap, mean_cosine=m.mean_cosine,
                          min_cosine=m.min_cosine)  # fmt: skip
        bad = failures(m, tolerance_for(judged(a.runner), a.runner.name))  # as mixnet-parity judges it
        if bad:
            a.refused = f"against {reference.runner.name}: " + "; ".join(bad)
    if reference is not None:
        reference.accuracy.update(agreement_top1=1.0, mean_cosine=1.0, min_cosine=1.0, is_reference=True)
    return {"n": seen.n, "skipped": skip_summary(skipped)}


def rows(artifacts: Sequence[Artifact], results: Sequence[dict], batches: Sequence[int]) -> list[dict]:
    """The table's rows: ``results`` are the latency results (dicts) of the loaded artifacts, batch by batch."""
    out, loaded = [], iter(results)
    for a in artifacts:
        latency = {}
        if a.runner is not None:
            for b in batches:
                r = next(loaded)
                energy = r.get("energy") or {}
                latency[str(b)] = {"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "images_per_s": r["throughput_ips"],
                                   "iterations": r["iterations"], "j_per_image": energy.get("j_per_image")}  # fmt: skip
        described = a.runner.describe() if a.runner is not None else {}
        out.append({
            "model": a.model, "name": described.get("name", f"{Path(a.model).name} [{a.runtime}]"),
            "runtime": described.get("runtime", a.runtime), "precision": described.get("precision"),
            "size_mb": os.path.getsize(a.model) / 1e6 if os.path.isfile(a.model) else None,
            "status": "refused" if a.refused else "ok", "why": a.refused,
            "accuracy": a.accuracy, "latency": latency,
        })  # fmt: skip
    return out
