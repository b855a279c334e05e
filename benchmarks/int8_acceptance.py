"""INT8 judged by accuracy (issue 25): cross-layer equalization and bias correction before / after, and which
label-free figure predicts the top-1 change.

    python benchmarks/int8_acceptance.py [--models s-trained,s-random,m-random,l-random] [--calib-count 32]
                                         [--eval-count 300] [--holdout 16] [--size 224]

Models: ``s-trained`` = ../shared/fixtures/trained_mixnet_s20 (MixNet-S trained on 20 classes); ``s-random`` =
the timm fixture's weights (timm's random init), ``m-random`` / ``l-random`` = the stored timm oracles' random
weights (as benchmarks/precision_accuracy.py). Images, all models: the trained fixture's photos: ``calib/``
(the first ``--holdout`` of the export's seeded shuffle are held out as an export without labels would, the next
``--calib-count`` calibrate) and ``eval/`` (``--eval-count`` crops, labelled by eval_labels.csv: top-1 accuracy
is meaningful for s-trained only; for the random models the top-1 change is the disagreement with FP32).

Per model, INT8 files (percentile calibration, mixnet_deploy.qdq) with each fix off/on: equalization,
bias correction, both; on s-trained also minmax, entropy and synthetic calibration, to span the quality range.
Per file: on the eval crops, mean / min cosine, top-1 agreement with FP32, top-1 accuracy and its drop with the
paired-bootstrap interval; on the held-out calib images (what an export without labels sees), the three
candidate proxies: top-1 agreement, mean cosine, and the margin figure (the fraction of images whose FP32
top-2 logit margin is within twice the largest logit error: where a flip is possible). Then, over all files of
all models: the rank correlation of each proxy with the top-1 change on the eval crops, and per image the
AUC with which the image's cosine or its margin figure predicts that its top-1 changes.
Writes benchmarks/results/int8_acceptance.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))

from precision_accuracy import FIXTURES, weights_file  # noqa: E402

from mixnet_deploy import precision_onnx  # noqa: E402
from mixnet_deploy.accuracy import accuracy_drop, hits, top5  # noqa: E402
from mixnet_deploy.atomic import write_json, write_text  # noqa: E402
from mixnet_deploy.data import CalibrationReader, Preprocess, calibration_sets, load_images  # noqa: E402
from mixnet_deploy.environment import versions  # noqa: E402
from mixnet_deploy.fold import fold_bn  # noqa: E402
from mixnet_deploy.int8_fixes import equalize, input_means  # noqa: E402
from mixnet_deploy.labels import labelled_images  # noqa: E402
from mixnet_deploy.metrics import compare  # noqa: E402
from mixnet_deploy.onnx_export import build_metadata, set_metadata, to_onnx  # noqa: E402
from mixnet_deploy.qdq import Int8Builder, amax_of, conv_inputs  # noqa: E402
from mixnet_deploy.runtimes import ort_session, run_ort  # noqa: E402
from mixnet_deploy.weights import load_model  # noqa: E402

TRAINED = FIXTURES / "trained_mixnet_s20"
FIXES = {"none": (False, False), "equalize": (True, False), "bias": (False, True), "both": (True, True)}
EXTRA = {"s-trained": ("minmax", "entropy", "synthetic")}  # more calibrations: a wider quality range


def run_batched(blob: bytes, x: np.ndarray, batch: int = 25) -> np.ndarray:
    session = ort_session(blob)
    return np.concatenate([run_ort(session, x[i : i + batch]) for i in range(0, len(x), batch)])


def margin_risk(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Per image: 1 where twice the largest logit error reaches FP32's top-2 margin (a top-1 flip is possible)."""
    s = np.sort(ref, axis=1)
    margin = s[:, -1] - s[:, -2]
    return (2.0 * np.abs(out - ref).max(axis=1) >= margin).astype(float)


def cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.sum(ref * out, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive scores above a negative (ties half): Mann-Whitney."""
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    return float(greater)


def ranks(v) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    v = np.asarray(v, float)
    return np.array([np.mean(np.flatnonzero(np.sort(v) == x)) for x in v])


def spearman(a, b) -> float:
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def fp32_graph(model_name: str, size: int, tmp: Path):
    variant, kind = model_name.split("-")
    weights = TRAINED / "state_dict.safetensors" if kind == "trained" else weights_file(variant, tmp)
    model, info = load_model(variant, str(weights))
    proto = to_onnx(fold_bn(model), size)
    return set_metadata(proto, build_metadata(model.spec, info, size, "fp32"))


def measure(name: str, args, images, tmp: Path) -> tuple[list[dict], list[dict]]:
    pre, sets, x_eval, labels = images
    proto = fp32_graph(name, args.size, tmp)
    data = proto.SerializeToString()
    x_hold = pre.normalize(sets.held_out.crops)
    ref_eval, ref_hold = run_batched(data, x_eval), run_batched(data, x_hold)
    trained = name.endswith("trained")
    ref_hit = hits(top5(ref_eval), labels)
    rows, per_image = [], []
    fixes = args.fixes.split(",")
    settings = [("percentile", fix) for fix in fixes] + [(m, "none") for m in EXTRA.get(name, ()) if args.extra]
    for method, fix in settings:
        eq, bias = FIXES[fix]
        t0 = time.perf_counter()
        base, facts = equalize(proto) if eq else (proto, None)
        base_data = base.SerializeToString()
        exact = float(np.abs(run_batched(base_data, x_eval[:8]) - ref_eval[:8]).max()) if eq else 0.0
        calib = sets.calib if method != "synthetic" else calibration_sets("synthetic", pre, args.calib_count).calib
        recipe = precision_onnx.Int8Recipe(method="percentile" if method == "synthetic" else method,
                                           equalize=eq, bias_correction=bias)  # fmt: skip
        cal = precision_onnx.calibrate(base_data, calib.ids, lambda c=calib: iter(CalibrationReader(c, pre)),
                                       recipe, tmp, name, method)  # fmt: skip
        amax = amax_of(precision_onnx.load_cache(cal.cache, cal.key))
        means = None
        if bias:
            means = input_means(base, conv_inputs(base), amax, iter(CalibrationReader(calib, pre)))
        blob = Int8Builder(base, amax, means).build().SerializeToString()
        made_s = time.perf_counter() - t0
        out_eval, out_hold = run_batched(blob, x_eval), run_batched(blob, x_hold)
        m = compare(ref_eval, out_eval)
        drop = accuracy_drop(ref_hit, hits(top5(out_eval), labels))
        flips = ref_eval.argmax(1) != out_eval.argmax(1)
        row = {
            "model": name, "calibration": method, "fix": fix, "equalized_pairs": facts.pairs if facts else 0,
            "equalize_max_abs_vs_fp32": exact, "mean_cosine": m.mean_cosine, "min_cosine": m.min_cosine,
            "top1_agreement": m.top1, "eval_images": len(x_eval),
            "fp32_top1": float(ref_hit[:, 0].mean()) if trained else None,
            "top1": float(hits(top5(out_eval), labels)[:, 0].mean()) if trained else None,
            "top1_drop": drop.top1.__dict__ if trained else None,
            "top1_change": float(flips.mean()),
            "proxy_holdout": {
                "images": len(x_hold), "top1_agreement": float(np.mean(ref_hold.argmax(1) == out_hold.argmax(1))),
                "mean_cosine": float(cosines(ref_hold, out_hold).mean()),
                "margin_risk": float(margin_risk(ref_hold, out_hold).mean()),
            },
            "seconds": made_s,
        }  # fmt: skip
        rows.append(row)
        per_image.append({"cos": cosines(ref_eval, out_eval), "risk": margin_risk(ref_eval, out_eval), "flip": flips})
        print(_fmt(row), file=sys.stderr, flush=True)
    return rows, per_image


def _fmt(r: dict) -> str:
    acc = "-" if r["top1"] is None else f"{r['top1']:.3f} ({r['top1_drop']['points']:+.2f} "
    acc += "" if r["top1"] is None else f"[{r['top1_drop']['low']:+.2f}, {r['top1_drop']['high']:+.2f}])"
    p = r["proxy_holdout"]
    return (
        f"| {r['model']} | {r['calibration']} | {r['fix']} | {r['equalized_pairs']} | "
        f"{r['equalize_max_abs_vs_fp32']:.2g} | {r['mean_cosine']:.4f} | {r['min_cosine']:.4f} | "
        f"{r['top1_agreement']:.3f} | {acc} | {p['top1_agreement']:.3f} | {p['mean_cosine']:.4f} | "
        f"{p['margin_risk']:.3f} |"
    )


HEAD = (
    "| model | calibration | fix | CLE pairs | CLE max abs vs FP32 | mean cos | min cos | top-1 agreement | "
    "top-1 (drop [95 %]) | held-out: agreement | held-out: mean cos | held-out: margin risk |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def evidence(rows: list[dict], per_image: list[dict]) -> dict:
    """Which proxy predicts the top-1 change: rank correlations over files, AUCs over images."""
    change = [r["top1_change"] for r in rows]
    trained = [r for r in rows if r["top1_drop"] is not None]
    figures = {"top1_agreement": -1, "mean_cosine": -1, "margin_risk": 1}  # sign: larger = more change
    out = {"files": len(rows), "spearman_vs_eval_top1_change": {}, "spearman_vs_trained_top1_drop": {}}
    for fig, sign in figures.items():
        out["spearman_vs_eval_top1_change"][fig] = spearman([sign * r["proxy_holdout"][fig] for r in rows], change)
        out["spearman_vs_trained_top1_drop"][fig] = spearman(
            [sign * r["proxy_holdout"][fig] for r in trained], [r["top1_drop"]["points"] for r in trained]
        )
    flips = np.concatenate([p["flip"] for p in per_image])
    out["per_image"] = {
        "images": int(len(flips)), "flipped": int(flips.sum()),
        "auc_one_minus_cosine": auc(1 - np.concatenate([p["cos"] for p in per_image]), flips),
        "auc_margin_risk": auc(np.concatenate([p["risk"] for p in per_image]), flips),
    }  # fmt: skip
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="s-trained,s-random,m-random,l-random")
    p.add_argument("--calib-count", type=int, default=32)
    p.add_argument("--eval-count", type=int, default=300)
    p.add_argument("--holdout", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--fixes", default=",".join(FIXES), help="the fix settings measured (default: all four)")
    p.add_argument("--no-extra", dest="extra", action="store_false", help="skip the extra calibrations of s-trained")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "int8_acceptance.json")
    args = p.parse_args(argv)
    pre = Preprocess(size=args.size)
    sets = calibration_sets(str(TRAINED / "calib"), pre, args.calib_count, held_out_max=args.holdout, quiet=True)
    found = labelled_images(TRAINED / "eval", str(TRAINED / "eval_labels.csv"))
    evaluated = load_images(found.paths[: args.eval_count], pre, quiet=True)
    images = (pre, sets, pre.normalize(evaluated.crops), found.labels[: args.eval_count])
    load = os.getloadavg()
    print(HEAD, file=sys.stderr)
    rows, per_image = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            r, i = measure(name, args, images, Path(tmp))
            rows += r
            per_image += i
    result = {
        "what": "INT8 (Q/DQ over FP16) vs FP32 ONNX in ONNX Runtime CPU: equalization / bias correction, proxies",
        "host": platform.node(), "size": args.size, "calib_count": len(sets.calib), "holdout": len(sets.held_out),
        "load_before": load, "load_after": os.getloadavg(), "versions": versions(), "rows": rows,
        "evidence": evidence(rows, per_image),
    }  # fmt: skip
    write_json(args.out, result)
    lines = [f"# INT8 acceptance: {args.size} px, {len(sets.calib)} calibration + {len(sets.held_out)} held-out "
             f"images, {len(evaluated)} eval crops; load {load[0]:.1f} -> {os.getloadavg()[0]:.1f} (2 cores)", "",
             HEAD, *(_fmt(r) for r in rows), "", f"evidence: {result['evidence']}"]  # fmt: skip
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
