"""Output comparison: measurements as values, and one tolerance table per precision.

The table below is the only place tolerances live: the export verification, ``mixnet-parity``
and the tests all read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    max_abs: float | None  # largest allowed |candidate - reference| over all logits
    min_cosine: float  # per-sample cosine similarity, worst sample
    min_mean_cosine: float
    min_top1: float | None  # fraction of samples whose argmax agrees
    min_top5_overlap: float | None  # mean |top5(candidate) & top5(reference)| / 5


TOLERANCES: dict[str, Tolerance] = {
    # float32 graph vs float32 PyTorch: only summation order differs.
    "fp32": Tolerance(max_abs=1e-3, min_cosine=0.99999, min_mean_cosine=0.99999, min_top1=None, min_top5_overlap=None),
}


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
