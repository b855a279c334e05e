"""FP16 / INT8 accuracy against the FP32 graph for MixNet-S/M/L, per calibration method; calibration time; sizes.

    python benchmarks/precision_accuracy.py [--variants s,m,l] [--calib-count 64] [--size 224]

Weights: S and tf_S = the timm fixture (../shared/fixtures/timm_mixnet_s; tf_S runs the same tensors with
SAME padding and BN eps 1e-3: timm's random init with measured BN statistics keeps activations of normal
size on photos; with the tf_mixnet_s oracle weights, FP16 differed from FP32 by up to 21.6 and INT8 agreed
on top-1 for 34 % of the photos, the mark of activations far beyond a trained model's), the others
(M, L, XL, XXL, tf_M/L) = the weights the stored timm oracles were computed with
(tests/oracles, rebuilt by tests/timm_oracle.py). All are random
weights with normal-sized activations, not ImageNet-trained ones: ~97 % of their logits pattern does
not depend on the input, so besides the usual metrics this also reports the cosine of the
input-dependent part (logits minus their mean over the held-out batch), the harder figure.

Images: scikit-image's bundled photos; every other photo (and four crops/flips of it) calibrates,
the rest (other photos, same kind of crops) is held out. Writes benchmarks/results/precision-<host>.json
and prints a table. FP16 is also measured with pools / sigmoids / the classifier kept in float32,
INT8 also with the classifier Gemm quantized: the data behind the defaults in mixnet_deploy.precision_onnx.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import ort_qdq  # noqa: E402

from mixnet_deploy import contract, precision_onnx  # noqa: E402
from mixnet_deploy.atomic import write_json  # noqa: E402
from mixnet_deploy.data import CalibrationReader, ImageSet, Preprocess, crop_image  # noqa: E402
from mixnet_deploy.environment import versions  # noqa: E402
from mixnet_deploy.fold import fold_bn  # noqa: E402
from mixnet_deploy.metrics import compare  # noqa: E402
from mixnet_deploy.onnx_export import build_metadata, check_graph, set_metadata, to_onnx  # noqa: E402
from mixnet_deploy.runtimes import ort_session, run_ort  # noqa: E402
from mixnet_deploy.weights import load_model  # noqa: E402

FIXTURES = Path(os.environ.get("MIXNET_FIXTURES") or ROOT.parent / "shared" / "fixtures")  # as tests/conftest.py
FIXTURE = FIXTURES / "timm_mixnet_s" / "state_dict.safetensors"
ORACLES = {
    "m": "mixnet_m_224", "l": "mixnet_l_224", "xl": "mixnet_xl_224", "xxl": "mixnet_xxl_224",
    "tf_s": "tf_mixnet_s_224", "tf_m": "tf_mixnet_m_224", "tf_l": "tf_mixnet_l_224",
}  # fmt: skip
FP16_VARIANTS = {"none": (), "GlobalAveragePool": ("GlobalAveragePool",), "Sigmoid": ("Sigmoid",), "Gemm": ("Gemm",)}


def weights_file(variant: str, tmp: Path) -> Path:
    if variant in ("s", "tf_s"):  # tf_s: the fixture's weights run as tf_mixnet_s (SAME pads, BN eps 1e-3)
        return FIXTURE
    from safetensors.torch import save_file
    from timm_oracle import load_oracle, random_state_dict

    from mixnet_deploy.arch import get_variant
    from mixnet_deploy.model import build_model
    from mixnet_deploy.weights import own_to_timm

    oracle = load_oracle(ORACLES[variant])
    spec = get_variant(oracle["variant"])
    shapes = {k: tuple(v.shape) for k, v in own_to_timm(build_model(spec).state_dict(), spec).items()}
    path = tmp / f"{variant}.safetensors"
    save_file(random_state_dict(shapes, oracle["seed"], oracle["gain"]), str(path), metadata={"variant": variant})
    return path


def photo_crops(pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    import skimage
    from PIL import Image

    files = sorted(p for p in (Path(skimage.__file__).parent / "data").iterdir() if p.suffix in (".png", ".jpg"))

    def variants(path):
        with Image.open(path) as img:
            img = img.convert("RGB")
        w, h = img.size
        return [
            img,
            img.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            img.crop((0, 0, int(w * 0.7), int(h * 0.7))),
            img.crop((int(w * 0.3), int(h * 0.3), w, h)).transpose(Image.Transpose.FLIP_TOP_BOTTOM),
            img.crop((int(w * 0.2), int(h * 0.2), int(w * 0.8), int(h * 0.8))).transpose(Image.Transpose.ROTATE_90),
        ]

    calib = np.stack([crop_image(v, pre) for p in files[0::2] for v in variants(p)])
    held = np.stack([crop_image(v, pre) for p in files[1::2] for v in variants(p)])
    return calib, held


def centered_cosine(ref: np.ndarray, out: np.ndarray) -> float:
    r, o = ref - ref.mean(0), out - out.mean(0)
    return float(np.mean(np.sum(r * o, 1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1))))


def row(ref, out, **extra) -> dict:
    return {**compare(ref, out).as_dict(), "centered_cosine": centered_cosine(ref, out), **extra}


def measure(variant: str, size: int, count: int, methods, tmp: Path) -> list[dict]:
    model, info = load_model(variant, str(weights_file(variant, tmp)))  # explicit: tf_* and s/m/l look alike
    proto = to_onnx(fold_bn(model), size)
    set_metadata(proto, build_metadata(model.spec, info, size, "fp32"))
    check_graph(proto)
    data = proto.SerializeToString()
    pre = Preprocess(size=size)
    calib, held = photo_crops(pre)
    calib = ImageSet(calib[:count], [(f"calib{i}", "") for i in range(min(count, len(calib)))])
    x = pre.normalize(held)
    ref = run_ort(ort_session(data), x)
    rows = [row(ref, ref, variant=variant, precision="fp32", setting="-", bytes=len(data))]
    for name, keep in FP16_VARIANTS.items():
        m16 = precision_onnx.to_fp16(proto, keep)
        check_graph(m16)
        blob = m16.SerializeToString()
        rows.append(row(ref, run_ort(ort_session(blob), x), variant=variant, precision="fp16",
                        setting=f"fp32 ops: {name}", bytes=len(blob)))  # fmt: skip
        print(_fmt(rows[-1]), file=sys.stderr, flush=True)
    runs = [(m, precision_onnx.INT8_OP_TYPES) for m in methods] + [
        (contract.DEFAULT_CALIB_METHOD, ("Conv", "Gemm"))
    ]
    for method, ops in runs:
        recipe = precision_onnx.Int8Recipe(method=method, op_types=ops)
        out_dir = Path(tempfile.mkdtemp(dir=tmp))
        cal = precision_onnx.calibrate(
            data, calib.ids, lambda: iter(CalibrationReader(calib, pre)), recipe, out_dir, "m", "photos"
        )
        t = time.perf_counter()
        q = ort_qdq.quantize_int8(data, cal, recipe)
        quant_s = time.perf_counter() - t
        check_graph(q)
        assert precision_onnx.int8_problems(q, ops) == []
        blob = q.SerializeToString()
        rows.append(row(ref, run_ort(ort_session(blob), x), variant=variant, precision="int8",
                        setting=f"{method}, quantized: {'+'.join(ops)}", bytes=len(blob),
                        calib_images=len(calib), calib_s=cal.seconds, quantize_s=quant_s))  # fmt: skip
        print(_fmt(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _fmt(r: dict) -> str:
    calib = f"{r['calib_s']:6.1f}" if "calib_s" in r else "     -"
    return (
        f"{r['variant']:<3} {r['precision']:<5} {r['setting']:<34} {r['max_abs']:>9.3g} {r['mean_cosine']:>9.6f} "
        f"{r['min_cosine']:>9.6f} {r['top1']:>5.2f} {r['top5_overlap']:>5.2f} {r['centered_cosine']:>8.4f} "
        f"{calib} {r['bytes'] / 1e6:>6.2f}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="s,m,l")
    p.add_argument("--methods", default=",".join(contract.CALIB_METHODS))
    p.add_argument("--calib-count", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / f"precision-{platform.node()}.json")
    args = p.parse_args(argv)
    head = (
        f"{'var':<3} {'prec':<5} {'setting':<34} {'max abs':>9} {'mean cos':>9} {'min cos':>9} {'top1':>5} "
        f"{'top5':>5} {'ctr cos':>8} {'cal s':>6} {'MB':>6}"
    )
    print(head, file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in args.variants.split(","):
            rows += measure(v, args.size, args.calib_count, args.methods.split(","), Path(tmp))
    result = {
        "what": "FP16/INT8 ONNX vs the FP32 ONNX in ONNX Runtime CPU, held-out natural images",
        "host": platform.node(), "cpu": platform.processor() or platform.machine(), "size": args.size,
        "calib_count": args.calib_count, "versions": versions(), "rows": rows,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(head)
    for r in rows:
        print(_fmt(r))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
