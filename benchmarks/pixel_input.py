#!/usr/bin/env python3
"""uint8-nhwc vs float32-nchw on natural images: exactness, precisions, graph cost, lint (issue 22).

    python benchmarks/pixel_input.py --variants s,m,xl,tf_s --images ../shared/fixtures/trained_mixnet_s20/eval
    python benchmarks/pixel_input.py --variants s --weights CKPT --precisions --calib DIR

Per variant, both formats are exported by ``run_export`` (the same weights: ``--weights`` for S, else the
seeded weights mixnet-export uses without ``--weights``; ``--top-k 5`` on the uint8 file), then on the first
``--n`` images of ``--images`` (decoded and centre-cropped by data.py, the timm eval transform that
tests/test_data.py checks against timm's own):

* ``vs_float_onnx``: the uint8 file on the pixels vs the float32 file on ``Preprocess.normalize`` of them;
* ``vs_pytorch``: the uint8 file vs the unfolded float32 PyTorch model on the same normalised pixels;
* ``top_k_ok``: its ``scores``/``classes`` vs numpy's top-5 of its logits (graph_io.top_k_problems);
* ``nodes_added``, input bytes per image, and ``polygraphy check lint`` on each file (when installed).

``--precisions`` adds FP16 and INT8 (``--calib DIR``) to both exports and compares each served file with the
FP32 float file on the images (metrics.compare), as the export verification does on its held-out images.
Writes ``--out/pixel_input.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from mixnet_deploy.atomic import json_text, write_json
from mixnet_deploy.config import ExportConfig
from mixnet_deploy.contract import IMAGE_NAME, INPUT_NAME, OUTPUT_NAME
from mixnet_deploy.data import Preprocess, find_images, load_images
from mixnet_deploy.graph_io import top_k_problems
from mixnet_deploy.metrics import compare
from mixnet_deploy.onnx_export import read_metadata
from mixnet_deploy.pipeline import run_export
from mixnet_deploy.runtimes import ort_session, run_torch
from mixnet_deploy.weights import load_model


def lint(path: Path) -> str:
    """``polygraphy check lint`` (ONNX checker + ONNX Runtime per node): "clean (N nodes pass)", the first
    failing entry, or why it did not run."""
    exe = Path(sys.executable).with_name("polygraphy")
    if not exe.is_file():
        return "not run (polygraphy not installed)"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "lint.json"
        out = subprocess.run([str(exe), "check", "lint", str(path), "-o", str(report)], capture_output=True, text=True)
        if not report.is_file():
            return f"not run (rc {out.returncode}): {(out.stdout + out.stderr).strip().splitlines()[-1][:200]}"
        found = json.loads(report.read_text())
    failing, entries = found["summary"]["failing"], found["lint_entries"]
    if failing or entries or out.returncode:
        return f"rc {out.returncode}, failing {failing[:3]}, entries {entries[:2]}"
    return f"clean ({len(found['summary']['passing'])} nodes pass)"


def export(variant: str, weights, out: Path, fmt: str, precisions: bool, calib) -> dict:
    cfg = ExportConfig(variant=variant, weights=weights, out_dir=out, engine="skip", input_format=fmt,
                       top_k=5 if fmt == "uint8-nhwc" else None, fp16=precisions, int8=precisions and bool(calib),
                       calib=calib if precisions else None, int8_exclude=("auto",) if precisions and calib else ())
    report = run_export(cfg)
    return {a.precision: a for a in report.artifacts}


def measure(variant: str, weights, images: str, n: int, precisions: bool, calib) -> dict:
    with tempfile.TemporaryDirectory(prefix="pixel-input-") as tmp:
        floats = export(variant, weights, Path(tmp) / "float", "float32-nchw", precisions, calib)
        pixels = export(variant, weights, Path(tmp) / "uint8", "uint8-nhwc", precisions, calib)
        import onnx

        fp32 = onnx.load(floats["fp32"].path)
        pre = Preprocess.from_metadata(read_metadata(fp32))  # the variant's crop_pct / interpolation
        crops = load_images(find_images(images), pre, limit=n, quiet=True).crops
        x = pre.normalize(crops)
        reference = ort_session(floats["fp32"].path).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        model = load_model(variant, weights)[0]
        torch_logits = run_torch(model, x)
        rows = {}
        for precision, artifact in pixels.items():
            served = ort_session(artifact.path)
            logits, scores, classes = served.run(None, {IMAGE_NAME: crops})
            float_same = ort_session(floats[precision].path).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
            rows[precision] = {
                "vs_float_onnx_same_precision_max_abs": float(np.abs(logits - float_same).max()),
                "vs_fp32_float_onnx": compare(reference, logits).as_dict(),
                "vs_pytorch_max_abs": float(np.abs(logits - torch_logits).max()),
                "top_k_ok": not top_k_problems(logits, scores, classes),
                "nodes": artifact.nodes,
                "nodes_float_file": floats[precision].nodes,
                "nodes_added": artifact.served.get("nodes_added"),
                "bytes_per_image": {"uint8-nhwc": int(crops[0].size), "float32-nchw": int(x[0].size * 4)},
                "lint": lint(Path(artifact.path)),
            }
        return {"variant": variant, "weights": str(weights or "seeded"), "images": len(crops), "files": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="s,m,xl,tf_s")
    ap.add_argument("--weights", help="checkpoint for S (the others use seeded weights)")
    ap.add_argument("--images", required=True, help="folder of natural images")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--precisions", action="store_true", help="also FP16 and INT8 (INT8 needs --calib)")
    ap.add_argument("--calib")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    results = []
    for variant in args.variants.split(","):
        weights = args.weights if variant == "s" else None
        row = measure(variant, weights, args.images, args.n, args.precisions, args.calib)
        print(json_text(row, indent=1), flush=True)
        results.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "pixel_input_precisions.json" if args.precisions else "pixel_input.json"
    write_json(args.out / name, results, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
