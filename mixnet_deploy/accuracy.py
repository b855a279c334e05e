"""Accuracy against ground truth: top-k hits, the drop of a candidate with a paired-bootstrap interval.

Pure numpy. A model's predictions are kept as its top-5 class indices per image (int32, 20 bytes
an image), never its logits, so 50,000 ImageNet images cost a megabyte per model.

The drop is ``reference accuracy - candidate accuracy`` in percentage points (positive: the
candidate is worse). Its interval comes from a paired bootstrap over images: the same resampled
images for both models. Per image the difference of the two hits is -1, 0 or +1, and the drop is
the mean of those, so resampling N images with replacement is exactly drawing the counts of the
three values from a multinomial with the observed frequencies; that draw costs O(samples), not
O(samples x N), and needs no index arrays.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import atomic

TOPK = 5
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def top5(logits: np.ndarray) -> np.ndarray:
    """(N, classes) -> int32 (N, 5) class indices, best first (ties: the lower index first)."""
    x = np.asarray(logits)
    return np.argsort(-x, axis=1, kind="stable")[:, : min(TOPK, x.shape[1])].astype(np.int32)


def hits(top: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """bool (N, 2): the label is the top-1 class, the label is among the top 5."""
    top, labels = np.asarray(top), np.asarray(labels).reshape(-1, 1)
    return np.stack([top[:, 0] == labels[:, 0], (top == labels).any(axis=1)], axis=1)


@dataclass(frozen=True)
class Accuracy:
    n: int
    top1: float  # fraction of images whose best class is the label
    top5: float

    @classmethod
    def of(cls, hit: np.ndarray) -> Accuracy:
        n = len(hit)
        return cls(n, float(hit[:, 0].mean()) if n else float("nan"), float(hit[:, 1].mean()) if n else float("nan"))

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Interval:
    points: float  # the measured drop, percentage points
    low: float  # the bootstrap interval's bounds
    high: float
    confidence: float = CONFIDENCE

    def __str__(self) -> str:
        return f"{self.points:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_bootstrap(
    ref_hit: np.ndarray, cand_hit: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> Interval:  # fmt: skip
    """Drop ``mean(ref_hit) - mean(cand_hit)`` in points with a percentile interval over resampled images."""
    ref_hit, cand_hit = np.asarray(ref_hit, bool), np.asarray(cand_hit, bool)
    if ref_hit.shape != cand_hit.shape or ref_hit.ndim != 1:
        raise ValueError(f"paired hits need equal 1-d shapes: {ref_hit.shape} vs {cand_hit.shape}")
    n = len(ref_hit)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), confidence)
    diff = ref_hit.astype(np.int8) - cand_hit.astype(np.int8)
    counts = np.array([np.sum(diff == -1), np.sum(diff == 0), np.sum(diff == 1)])
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=samples)
    drops = 100.0 * (draws[:, 2] - draws[:, 0]) / n
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(drops, [tail, 100.0 - tail])
    return Interval(100.0 * float(diff.mean()), float(low), float(high), confidence)


@dataclass(frozen=True)
class AccuracyDrop:
    top1: Interval
    top5: Interval

    def as_dict(self) -> dict:
        return {"top1": asdict(self.top1), "top5": asdict(self.top5), "unit": "percentage points"}


def accuracy_drop(ref_hit: np.ndarray, cand_hit: np.ndarray, seed: int = BOOTSTRAP_SEED) -> AccuracyDrop:
    """Top-1 and top-5 drops of a candidate against the reference on the same images."""
    return AccuracyDrop(
        paired_bootstrap(ref_hit[:, 0], cand_hit[:, 0], seed=seed),
        paired_bootstrap(ref_hit[:, 1], cand_hit[:, 1], seed=seed),
    )


def accuracy_lines(acc: Accuracy, drop: AccuracyDrop, reference: dict | None = None) -> list[str]:
    """Rows for the parity table: the reference's and the candidate's accuracy, the drop with its interval."""
    rows = [(f"accuracy (n={acc.n})", "top-1", "top-5")]
    if reference is not None:
        rows.append(("reference", f"{reference['top1']:.4f}", f"{reference['top5']:.4f}"))
    rows.append(("this candidate", f"{acc.top1:.4f}", f"{acc.top5:.4f}"))
    rows.append((f"drop, points ({drop.top1.confidence:.0%})", str(drop.top1), str(drop.top5)))
    return [f"  {a:<22} {b:>22} {c:>22}" for a, b, c in rows]


class PredictionsWriter:
    """JSON Lines, one object per image and model: ``{"image", "model", "top5", "label"}``.

    Written batch by batch to a temporary name beside ``path`` and renamed on success
    (:func:`mixnet_deploy.atomic.atomic_path`); an interrupted run leaves no file.
    """

    def __init__(self, path: str | os.PathLike):
        self._atomic = atomic.atomic_path(Path(path))
        self._file = open(self._atomic.__enter__(), "w", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)

    def write(self, images: list[str], models: list[str], tops: list[np.ndarray], labels: np.ndarray | None):
        """One batch: ``tops[j]`` is model ``j``'s (N, 5) top classes; lines go image by image."""
        lines = []
        for i, image in enumerate(images):
            label = None if labels is None else int(labels[i])
            for model, top in zip(models, tops):
                row = {"image": image, "model": model, "top5": top[i].tolist(), "label": label}
                lines.append(atomic.json_text(row, indent=None))
        self._file.write("\n".join(lines) + "\n")

    def __enter__(self) -> PredictionsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()
        self._atomic.__exit__(*exc)
