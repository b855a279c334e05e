"""``--int8-exclude``: which convolutions stay float16 so that the INT8 file passes its acceptance criterion.

Trained networks have outlier channels; a per-tensor activation scale handles them badly and one
layer can sink the whole model. ``auto`` measures every quantized convolution's sensitivity on the
held-out images, leave-one-out: the INT8 file with everything quantized but that layer, compared
with the FP32 file (mean / min cosine, top-5 overlap). It then keeps the most sensitive layers in
float16, greedily (one more per step, each step verified), until the INT8 file is accepted by the export's
criterion (acceptance.py: its top-1 drop with ``--labels``, else its tolerance), within
a cap (:data:`MAX_EXCLUDE_FRACTION` of the convolutions). Beyond the cap the run fails (exit 1)
naming the layers it would need. Names given explicitly (as printed in the table) are taken as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .acceptance import Judge
from .environment import QUIET
from .errors import InputError
from .metrics import compare

log = logging.getLogger("mixnet_deploy")

AUTO = "auto"
MAX_EXCLUDE_FRACTION = 0.2  # at most a fifth of the convolutions stay float16


def parse_exclude(spec: str | None) -> tuple[str, ...]:
    """``None`` -> (); ``"auto"`` -> ("auto",); ``"a,b"`` -> ("a", "b"); InputError for an empty name."""
    if spec is None:
        return ()
    names = tuple(part.strip() for part in str(spec).split(","))
    if not all(names) or (AUTO in names and len(names) > 1):
        raise InputError("expected 'auto' or comma-separated Conv layer names", field="int8_exclude", value=spec)
    return names


def exclude_cap(n_convs: int) -> int:
    return int(n_convs * MAX_EXCLUDE_FRACTION)


@dataclass
class Exclusion:
    """What ``--int8-exclude`` decided: the layers kept in float16, and the measurements behind it."""

    mode: str  # "auto", "names" or "none"
    layers: list[str]
    cap: int
    baseline: dict  # metrics vs FP32 with every candidate layer quantized
    final: dict  # metrics of the file written
    table: list[dict] = field(default_factory=list)  # auto: one row per layer, most sensitive first
    steps: int = 0  # INT8 files built and run for the search
    passed: bool = True  # False: the criterion needs more than `cap` layers in float16
    needed: list[str] = field(default_factory=list)  # not passed: the layers it would need (empty: none suffice)
    best: dict = field(default_factory=dict)  # not passed: the closest step within the cap (layers, what failed)
    tried: list[dict] = field(default_factory=list)  # the failed steps of the search: layers, mean cosine, failure

    def failure(self, named: int = 3) -> str:
        """The exit-1 line when the cap was not enough: the cap, the best figure within it, how many layers it
        would need (the first ``named``), where the table is; the layers themselves are in the report."""
        if self.needed:
            first = ", ".join(self.needed[:named]) + (", ..." if len(self.needed) > named else "")
            need = f"it would need {len(self.needed)} ({first})"
        else:
            need = f"not even all {len(self.table)} in float16 meet it"
        best = f"best within it: {self.best['failure']} with {self.best['layers']} in float16; " if self.best else ""
        return (f"INT8 cannot meet its criterion within the cap of {self.cap} layers in float16 (a fifth of the "
                f"convolutions): {best}{need}; the sensitivity table of {len(self.table)} layers and the layers "
                "needed: int8_exclusion in the run's report")  # fmt: skip


Evaluate = Callable[[Sequence[str]], "np.ndarray"]  # excluded layers -> logits on the held-out inputs


def auto_exclude(evaluate: Evaluate, layers: Sequence[str], reference: np.ndarray, judge: Judge, cap: int,
                 progress=None) -> Exclusion:  # fmt: skip
    """Greedy exclusion by leave-one-out sensitivity until ``judge`` (acceptance.py: the top-1 drop with --labels,
    else the tolerance) passes; beyond ``cap``: ``passed`` False, ``needed`` the layers. ``progress``
    (environment.Progress): a bar with an ETA over the leave-one-out runs."""
    out = evaluate(())
    record, bad = judge(out)
    baseline = {**compare(reference, out).as_dict(), "acceptance": record}
    result = Exclusion(AUTO, [], cap, baseline, baseline, steps=1)
    if not bad:
        return result
    with (progress or QUIET).bar(len(layers), "int8 sensitivity", "layer") as bar:
        for layer in layers:
            row = {"layer": layer, **compare(reference, evaluate((layer,))).as_dict()}
            result.table.append(row)
            result.steps += 1
            bar.update(1)
    result.table.sort(key=lambda r: (-r["mean_cosine"], -r["min_cosine"], -r["top5_overlap"], r["layer"]))
    ranked = [r["layer"] for r in result.table]
    for k in range(1, min(cap, len(ranked)) + 1):
        if _passes(evaluate, ranked[:k], reference, judge, result):
            return result
    result.best = _closest(result.tried)
    result.passed = False
    result.needed = _needed_beyond_cap(evaluate, ranked, reference, judge, cap, result)
    result.layers = []  # no file is written
    return result


def _passes(evaluate: Evaluate, excluded: Sequence[str], reference, judge: Judge, result: Exclusion) -> bool:
    out = evaluate(tuple(excluded))
    final = compare(reference, out)
    record, bad = judge(out)
    result.steps += 1
    log.info("int8 exclude %d layer(s): mean cosine %.6f%s", len(excluded), final.mean_cosine,
             f"; {bad[0]}" if bad else "")  # fmt: skip
    if bad:
        result.tried.append({"layers": len(excluded), "mean_cosine": final.mean_cosine, "failure": bad[0]})
        return False
    result.layers, result.final = list(excluded), {**final.as_dict(), "acceptance": record}
    return True


def _closest(tried: list[dict]) -> dict:
    """The failed step that came closest (highest mean cosine vs FP32; fewer layers on a tie)."""
    return max(tried, key=lambda t: (t["mean_cosine"], -t["layers"]), default={})


def _needed_beyond_cap(evaluate, ranked, reference, judge: Judge, cap, result: Exclusion) -> list[str]:
    """The shortest prefix of the ranking (doubling from the cap) that passes; [] if none does."""
    k = max(cap, 1)
    while k < len(ranked):
        k = min(2 * k, len(ranked))
        if _passes(evaluate, ranked[:k], reference, judge, result):
            return ranked[:k]
    return []


def table_text(exclusion: Exclusion, limit: int = 12) -> str:
    """The printed sensitivity table: the most sensitive layers first, the excluded ones marked."""
    lines = [f"{'layer (leave-one-out: all others INT8)':<56} {'mean cos':>9} {'min cos':>9} {'top5':>5}  kept"]
    for row in exclusion.table[:limit]:
        mark = "fp16" if row["layer"] in exclusion.layers else ""
        cos = f"{row['mean_cosine']:>9.6f} {row['min_cosine']:>9.6f}"
        lines.append(f"{row['layer']:<56} {cos} {row['top5_overlap']:>5.2f}  {mark}")
    more = len(exclusion.table) - limit
    if more > 0:
        lines.append(f"... {more} more layers in <model>.report.json (int8_exclusion.table)")
    return "\n".join(lines)


def as_report(exclusion: Exclusion) -> dict:
    return asdict(exclusion)


def int8_with_exclusion(builder, spec: Sequence[str], reference: np.ndarray, x: np.ndarray, judge: Judge,
                        progress=None):  # fmt: skip
    """(INT8 model, Exclusion) for ``--int8-exclude`` ``spec`` (parse_exclude's result) on held-out ``x``, auto
    searching until ``judge`` passes; ``builder`` is a :class:`qdq.Int8Builder`. Unknown names: InputError listing
    a few valid ones."""
    from .qdq import Placement
    from .runtimes import ort_session, run_ort

    cap = exclude_cap(len(builder.convs))

    def build(excluded):
        return builder.build(Placement(exclude=tuple(excluded)))

    def evaluate(excluded):
        return run_ort(ort_session(build(excluded).SerializeToString()), x)

    if tuple(spec) == (AUTO,):
        exclusion = auto_exclude(evaluate, builder.candidates(), reference, judge, cap, progress)
        return (build(exclusion.layers) if exclusion.passed else None), exclusion
    unknown = [n for n in spec if n not in builder.convs]
    if unknown:
        examples = ", ".join(builder.candidates()[:2])
        raise InputError(f"expected Conv layer names of this graph as printed by auto, e.g. {examples}",
                         field="int8_exclude", value=unknown[0])  # fmt: skip
    return build(spec), Exclusion("names" if spec else "none", list(spec), cap, {}, {})
