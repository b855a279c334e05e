"""Whether an FP16 / INT8 file is kept: its top-1 drop against FP32 on labelled held-out images, or a proxy.

With ``mixnet-export --labels``, the held-out images of ``--calib`` carry classes, and a reduced-precision
file is accepted when the upper bound of its top-1 drop against the FP32 file (percentage points, the
paired-bootstrap interval of :mod:`mixnet_deploy.accuracy`, 95 %) is at most ``--max-top1-drop``. The
cosine figures stay in the report as information.

How many held-out images such a bound needs: a percentile bootstrap over images that never flipped
to wrong puts its upper bound at 0, however few they are; what the images can actually bound is the
rule of three: with no flip to wrong in ``n`` images, the flip rate's 95 % upper bound is ``3 / n``. A
bound of ``P`` points therefore needs at least ``300 / P`` images (300 for 1 point), more when some
images flip; fewer is warned about (:func:`holdout_warning`).

Without labels a proxy decides (:data:`PROXY`, chosen by measurement: docs/precision.md "Which figure
predicts the top-1 change").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .accuracy import Accuracy, accuracy_drop, hits, top5
from .metrics import compare, failures
from .precision_table import Tolerance

RULE_OF_THREE = 3.0  # -ln(0.05): the 95 % upper bound of a rate never observed in n trials is ~3 / n
DEFAULT_MAX_TOP1_DROP = 1.0  # --max-top1-drop, percentage points


def holdout_needed(max_top1_drop: float) -> int | None:
    """Held-out images that can bound the top-1 drop at ``max_top1_drop`` points (None: no count can, <= 0)."""
    if not max_top1_drop > 0:
        return None
    return math.ceil(100.0 * RULE_OF_THREE / max_top1_drop)


LABELLED_HOLDOUT_MAX = holdout_needed(DEFAULT_MAX_TOP1_DROP)  # --labels without --holdout: at most this many


def holdout_warning(n: int, max_top1_drop: float) -> str | None:
    """The warning for too few labelled held-out images to bound the drop, else None."""
    needed = holdout_needed(max_top1_drop)
    if needed is not None and n >= needed:
        return None
    if needed is None:
        return (f"WARNING: --max-top1-drop {max_top1_drop:g}: a bound of 0 points or less asks the file to be at "
                "least as accurate as FP32; no count of held-out images can show that")  # fmt: skip
    can = f"about {100.0 * RULE_OF_THREE / n:.1f} points" if n else "nothing"
    return (
        f"WARNING: {n} labelled held-out images: a top-1 drop bound of {max_top1_drop:g} points needs at least "
        f"{needed} (rule of three: with no image flipped to wrong, {n} images bound the drop at {can}); "
        "raise --holdout or label more --calib images"
    )


@dataclass(frozen=True)
class Verdict:
    """The accuracy judgement of one file: the figures, the bound, whether it passed."""

    criterion: str  # "top1_drop"
    max_top1_drop: float
    n: int
    reference: dict  # Accuracy of the FP32 file on the held-out images
    candidate: dict
    top1_drop: dict  # Interval, points
    top5_drop: dict
    accepted: bool

    def failures(self) -> list[str]:
        if self.accepted:
            return []
        drop = self.top1_drop
        return [
            f"top-1 drop {drop['points']:+.2f} points [{drop['low']:+.2f}, {drop['high']:+.2f}] on {self.n} labelled "
            f"images: upper bound > --max-top1-drop {self.max_top1_drop:g}"
        ]

    def as_dict(self) -> dict:
        return asdict(self)


def judge_top1(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray, max_top1_drop: float) -> Verdict:
    """Accept ``candidate`` logits when the 95 % upper bound of its top-1 drop against ``reference`` is at most
    ``max_top1_drop`` points on the images labelled ``labels``."""
    ref_hit, cand_hit = hits(top5(reference), labels), hits(top5(candidate), labels)
    drop = accuracy_drop(ref_hit, cand_hit)
    return Verdict(
        "top1_drop", float(max_top1_drop), len(labels), Accuracy.of(ref_hit).as_dict(), Accuracy.of(cand_hit).as_dict(),
        asdict(drop.top1), asdict(drop.top5), bool(drop.top1.high <= max_top1_drop),
    )  # fmt: skip


def verdict_line(precision: str, record: dict) -> str:
    """One summary line of a :class:`Verdict` (its ``as_dict``), for the export's table."""
    drop = record["top1_drop"]
    word = "accepted" if record["accepted"] else "REFUSED"
    return (
        f"{precision} {word}: top-1 {record['candidate']['top1']:.3f} vs FP32 {record['reference']['top1']:.3f} on "
        f"{record['n']} labelled held-out images, drop {drop['points']:+.2f} points, 95% interval "
        f"[{drop['low']:+.2f}, {drop['high']:+.2f}] (bound: upper <= {record['max_top1_drop']:g})"
    )


Judge = Callable[[np.ndarray], tuple[dict, list[str]]]  # candidate logits -> (what decided, its failures)


def labelled_judge(reference: np.ndarray, labels: np.ndarray, max_top1_drop: float) -> Judge:
    """The top-1 drop criterion (``--labels``) against the FP32 ``reference`` logits of the labelled images."""

    def judge(candidate: np.ndarray) -> tuple[dict, list[str]]:
        verdict = judge_top1(reference, candidate, labels, max_top1_drop)
        return verdict.as_dict(), verdict.failures()

    return judge


def tolerance_judge(reference: np.ndarray, tolerance: Tolerance) -> Judge:
    """The label-free criterion: a precision's tolerance (precision_table.py) against ``reference``."""

    def judge(candidate: np.ndarray) -> tuple[dict, list[str]]:
        return {"criterion": "tolerance", "tolerance": asdict(tolerance)}, failures(compare(reference, candidate),
                                                                                    tolerance)  # fmt: skip

    return judge
