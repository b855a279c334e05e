"""INT8 before / after issue 13 for MixNet-S/M/L: Q/DQ over FP32 (ONNX Runtime's quantize_static) versus Q/DQ
over the FP16 graph (mixnet_deploy.qdq), and the --int8-exclude auto outlier case.

    python benchmarks/int8_fp16.py [--variants s,m,l] [--calib-count 64] [--size 224] [--outlier]

Per variant, from one calibration (percentile, the default recipe): float32 compute tensors (ONNX type
inference), Q/DQ nodes, residual Adds with a quantized skip input, file size, accuracy against the FP32 ONNX on
held-out photos (mean / min cosine, top-1, top-5 overlap, cosine of the input-dependent part) and ONNX Runtime
CPU latency at batch 1, all sessions timed side by side in this one process (rounds alternate between them and
each session is warmed up again before its turn). Also measured: the SE convolutions quantized, and the residual
skip inputs left float. ``--outlier``: the trained-like MixNet-S with outlier channels of tests/test_qdq.py,
exported without and with ``--int8-exclude auto``. TensorRT speed is not measured here (no GPU).
Weights and images as in benchmarks/precision_accuracy.py (random weights; no trained checkpoint here).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))

import ort_qdq  # noqa: E402
from precision_accuracy import centered_cosine, photo_crops, weights_file  # noqa: E402

from mixnet_deploy import precision_onnx, qdq  # noqa: E402
from mixnet_deploy.atomic import json_text, write_json, write_text  # noqa: E402
from mixnet_deploy.data import CalibrationReader, ImageSet, Preprocess  # noqa: E402
from mixnet_deploy.environment import versions  # noqa: E402
from mixnet_deploy.fold import fold_bn  # noqa: E402
from mixnet_deploy.metrics import compare  # noqa: E402
from mixnet_deploy.onnx_export import build_metadata, set_metadata, to_onnx  # noqa: E402
from mixnet_deploy.runtimes import ort_session, run_ort  # noqa: E402
from mixnet_deploy.weights import load_model  # noqa: E402

RESULTS = ROOT / "results"


def files(variant: str, size: int, count: int, tmp: Path) -> tuple[dict[str, bytes], np.ndarray, float]:
    """The FP32, FP16 and INT8 files of one variant (one calibration), the held-out inputs, calibration seconds."""
    model, info = load_model(None, str(weights_file(variant, tmp)))
    proto = set_metadata(to_onnx(fold_bn(model), size), build_metadata(model.spec, info, size, "fp32"))
    data = proto.SerializeToString()
    pre = Preprocess(size=size)
    calib, held = photo_crops(pre)
    calib = ImageSet(calib[:count], [(f"calib{i}", "") for i in range(min(count, len(calib)))])
    recipe = precision_onnx.Int8Recipe()
    cal = precision_onnx.calibrate(
        data, calib.ids, lambda: iter(CalibrationReader(calib, pre)), recipe, tmp, variant, ""
    )
    builder = qdq.Int8Builder(proto, qdq.amax_of(precision_onnx.load_cache(cal.cache, cal.key)))
    made = {
        "fp32": data,
        "fp16": precision_onnx.to_fp16(proto).SerializeToString(),
        "int8 before (Q/DQ over FP32)": ort_qdq.quantize_int8(data, cal, recipe).SerializeToString(),
        "int8 after (Q/DQ over FP16)": builder.build().SerializeToString(),
        "int8 after, SE convs quantized": builder.build(qdq.Placement(quantize_se=True)).SerializeToString(),
        "int8 after, residual skips float": builder.build(qdq.Placement(residual_adds=False)).SerializeToString(),
    }
    return made, pre.normalize(held), cal.seconds


def latencies(blobs: dict[str, bytes], size: int, rounds: int = 5, iters: int = 20) -> dict[str, float]:
    """Median ms per batch-1 inference of each file, the sessions timed in alternating rounds in this process."""
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    sessions = {name: ort_session(blob) for name, blob in blobs.items()}
    times = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            for _ in range(3):  # warm again: the previous session's spinning threads held the cores
                run_ort(session, x)
            t = time.perf_counter()
            for _ in range(iters):
                run_ort(session, x)
            times[name].append((time.perf_counter() - t) / iters * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def measure(variant: str, size: int, count: int, tmp: Path) -> list[dict]:
    made, x, calib_s = files(variant, size, count, tmp)
    ref = run_ort(ort_session(made["fp32"]), x)
    ms = latencies(made, size)
    rows = []
    for name, blob in made.items():
        model = onnx.load_from_string(blob)
        facts = qdq.graph_facts(model)
        out = run_ort(ort_session(blob), x)
        rows.append({
            "variant": variant, "file": name, "bytes": len(blob), **compare(ref, out).as_dict(),
            "centered_cosine": centered_cosine(ref, out), "ort_cpu_ms_b1": ms[name], "calib_s": calib_s,
            **{k: facts[k] for k in ("float32_tensors", "qdq_nodes", "convs", "convs_quantized", "residual_adds",
                                     "residual_adds_quantized", "opset", "subnormal_scales")},
        })  # fmt: skip
        print(_fmt(rows[-1]), file=sys.stderr, flush=True)
    return rows


HEAD = (
    "| model | file | float32 tensors | Q/DQ | convs INT8 | residual Adds quantized | MB | mean cos | min cos "
    "| top-1 | top-5 | ctr cos | ORT CPU ms (b1) |"
)


def _fmt(r: dict) -> str:
    return (
        f"| {r['variant'].upper()} | {r['file']} | {r['float32_tensors']} | {r['qdq_nodes']} | "
        f"{r['convs_quantized']}/{r['convs']} | {r['residual_adds_quantized']}/{r['residual_adds']} | "
        f"{r['bytes'] / 1e6:.2f} | {r['mean_cosine']:.6f} | {r['min_cosine']:.6f} | {r['top1']:.2f} | "
        f"{r['top5_overlap']:.2f} | {r['centered_cosine']:.4f} | {r['ort_cpu_ms_b1']:.2f} |"
    )


def outlier_case(tmp: Path) -> dict:
    """tests/test_qdq.py's outlier checkpoint (96 px, 16 calibration photos), exported without and with auto."""
    from outliers import GAIN, PLANTED, make_case
    from test_qdq import SIZE

    from mixnet_deploy.config import ExportConfig
    from mixnet_deploy.errors import VerificationError
    from mixnet_deploy.export_reports import read_report
    from mixnet_deploy.pipeline import run_export

    case = make_case(tmp, SIZE)
    weights, calib = case["planted"], case["calib"]
    found = {}
    for exclude in (None, "auto"):
        out = tmp / f"exclude-{exclude}"
        cfg = ExportConfig(weights=str(weights), img_size=SIZE, out_dir=out, engine="skip", int8=True,
                           calib=str(calib), calib_count=16, int8_exclude=(exclude,) if exclude else ())  # fmt: skip
        t = time.perf_counter()
        try:
            run_export(cfg)
        except VerificationError as exc:
            print(f"exclude={exclude}: {exc}", file=sys.stderr)
        report = read_report(out)
        found[str(exclude)] = {
            "seconds": time.perf_counter() - t,
            "metrics": report["artifacts"][-1]["metrics"],
            "exclusion": {k: v for k, v in report["int8_exclusion"].items() if k != "table"},
            "table_top5": report["int8_exclusion"].get("table", [])[:5],
        }
    return {"size": SIZE, "planted": {str(k): v for k, v in PLANTED.items()}, "gain": GAIN, "runs": found}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="s,m,l")
    p.add_argument("--calib-count", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--outlier", action="store_true", help="also the --int8-exclude auto outlier case")
    p.add_argument("--out", type=Path, default=RESULTS / f"int8_fp16-{platform.node()}.json")
    args = p.parse_args(argv)
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    rows, outlier = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants.split(","):
            rows += measure(v, args.size, args.calib_count, Path(tempfile.mkdtemp(dir=tmp)))
        if args.outlier:
            outlier = outlier_case(Path(tempfile.mkdtemp(dir=tmp)))
    with open("/proc/loadavg") as f:
        load_after = f.read().split()[:3]
    result = {
        "what": "INT8 Q/DQ over FP32 (before) vs over FP16 (after), ONNX Runtime CPU, held-out photos",
        "host": platform.node(), "size": args.size, "calib_count": args.calib_count, "versions": versions(),
        "loadavg_before": load_before, "loadavg_after": load_after, "rows": rows, "outlier_case": outlier,
    }  # fmt: skip
    write_json(args.out, result)
    md = [f"# INT8 over FP16: {args.size}x{args.size}, {args.calib_count} calibration images, "
          f"load {' '.join(load_before)} -> {' '.join(load_after)}", "", HEAD,
          "|" + "---|" * 13, *(_fmt(r) for r in rows)]  # fmt: skip
    write_text(args.out.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))
    if outlier:
        print(json_text(outlier, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
