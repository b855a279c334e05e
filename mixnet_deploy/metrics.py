"""Output comparison as values: ``compare`` measures a candidate's logits against a reference's (``Metrics``),
``failures`` judges them by a precision's tolerance, ``required_tolerance`` / ``tightest_passing`` say what they
would have passed. Used by the export's verification, the INT8 sensitivity sweep and the parity harness;
it imports no runtime, so none of them pulls another up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from . import precision_table
from .precision_table import Tolerance


@dataclass(frozen=True)
class Metrics:
    n: int
    max_abs: float
    max_rel: float
    mean_cosine: float
    min_cosine: float
    top1: float
    top5_overlap: float
    scale: float = 1.0  # max(1, largest |reference logit|): Tolerance.max_abs is per unit of it

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def merge(cls, parts: Sequence[Metrics]) -> Metrics:
        """The metrics of the concatenated inputs from those of its batches: maxima, minima, weighted means."""
        n = sum(p.n for p in parts)

        def mean(name: str) -> float:
            return float(sum(getattr(p, name) * p.n for p in parts) / n)

        return cls(
            n=n, max_abs=max(p.max_abs for p in parts), max_rel=max(p.max_rel for p in parts),
            mean_cosine=mean("mean_cosine"), min_cosine=min(p.min_cosine for p in parts), top1=mean("top1"),
            top5_overlap=mean("top5_overlap"), scale=max(p.scale for p in parts),
        )  # fmt: skip


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
        scale=max(1.0, float(np.abs(ref).max())),
    )


def failures(metrics: Metrics, tol: Tolerance) -> list[str]:
    """What exceeds the tolerance, one readable item each; empty when it passes."""
    bad = []
    if tol.max_abs is not None and not metrics.max_abs <= tol.max_abs * metrics.scale:
        per = f" x the largest |logit| {metrics.scale:.3g}" if metrics.scale > 1 else ""
        bad.append(f"max abs error {metrics.max_abs:.3g} > {tol.max_abs:g}{per}")
    if not metrics.min_cosine >= tol.min_cosine:
        bad.append(f"min cosine {metrics.min_cosine:.6f} < {tol.min_cosine}")
    if not metrics.mean_cosine >= tol.min_mean_cosine:
        bad.append(f"mean cosine {metrics.mean_cosine:.6f} < {tol.min_mean_cosine}")
    if tol.min_top1 is not None and not metrics.top1 >= tol.min_top1:
        bad.append(f"top-1 agreement {metrics.top1:.3f} < {tol.min_top1}")
    if tol.min_top5_overlap is not None and not metrics.top5_overlap >= tol.min_top5_overlap:
        bad.append(f"top-5 overlap {metrics.top5_overlap:.3f} < {tol.min_top5_overlap}")
    return bad


def tightest_passing(metrics: Metrics) -> str | None:
    """The strictest precision row whose tolerance these metrics pass (None: none passes).

    Rows are ordered by their cosine bound, the one criterion every row has.
    """
    rows = sorted(precision_table.tolerances().items(), key=lambda kv: (-kv[1].min_cosine, -kv[1].min_mean_cosine))
    return next((name for name, tol in rows if not failures(metrics, tol)), None)


def required_tolerance(metrics: Metrics) -> Tolerance:
    """The tightest tolerance these metrics would have passed (the measured values as bounds)."""
    return Tolerance(
        max_abs=metrics.max_abs / metrics.scale,
        min_cosine=metrics.min_cosine,
        min_mean_cosine=metrics.mean_cosine,
        min_top1=metrics.top1,
        min_top5_overlap=metrics.top5_overlap,
    )
