"""FP16 and INT8 (QDQ) ONNX made from the verified FP32 graph, with INT8 calibration on the CPU.

The precision lives in the graph (TensorRT 11 has no FP16/INT8 builder flags any more), so the
same file builds as a strongly typed engine on TensorRT 10 and 11, and its accuracy is checked
here, in ONNX Runtime, before any GPU sees it:

* FP16: onnxconverter-common's ``convert_float_to_float16`` with ``keep_io_types=True``: every
  weight and activation float16, a Cast after ``input`` and before ``logits`` so servers feed and
  read float32. No operator is kept in float32 (:data:`FP16_KEEP_FP32_OPS`): keeping the pools,
  the sigmoids or the classifier in float32 did not measurably help (docs/precision.md).
* INT8: the FP16 graph with Q/DQ (float16 scales) on the inputs of the convolutions and on the
  residual skip inputs, built in :mod:`mixnet_deploy.qdq` from the calibrated ranges below (issue 13:
  nothing float32 for a strongly typed engine). :func:`quantize_int8` (ONNX Runtime's
  ``quantize_static``, Q/DQ over the FP32 graph) is the earlier file, kept as the "before" of
  benchmarks/int8_fp16.py. :func:`int8_problems` checks either against TensorRT's Q/DQ contract.
* Calibration: ORT's MinMax / Entropy / Percentile calibrators fed one batch at a time (bounded
  memory; ORT's histogram collector cannot stack unequal batches), ranges cached in a JSON file
  beside the artifacts whose name holds a SHA-256 over the FP32 ONNX bytes, the image list (paths
  and content hashes), the method and the recipe: the same inputs skip calibration, any change
  recalibrates. The cache is ORT's own format (``load_tensors_data``), reduced to the ranges.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .atomic import json_text, write_json
from .contract import CALIB_METHODS, DEFAULT_CALIB_METHOD, META_PRECISION
from .environment import stopwatch
from .errors import InputError
from .onnx_export import read_metadata, set_metadata

log = logging.getLogger("mixnet_deploy")

FP16_KEEP_FP32_OPS: tuple[str, ...] = ()  # measured: no op needs float32 (docs/precision.md)
FP16_MAX = 65504.0
INT8_OP_TYPES = ("Conv",)  # the classifier Gemm stays float: measured (docs/precision.md)
CALIB_OP_TYPES = ("Conv", "Add")  # ranges of conv inputs and of the residual Adds' skip inputs (qdq.py)
CACHE_FORMAT = 1
OPERATOR_FORMAT_OPS = frozenset({"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QGemm"})


def with_precision(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """Set ``mixnet.precision`` and keep every other metadata entry."""
    meta = read_metadata(model)
    meta[META_PRECISION] = precision
    return set_metadata(model, meta)


# ---------------------------------------------------------------- FP16


def import_float16():
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        expected = "expected `pip install onnxconverter-common`"
        raise InputError(expected, field="fp16", problem="needs onnxconverter-common") from exc
    return float16


def to_fp16(fp32: onnx.ModelProto, keep_fp32_ops: Sequence[str] = FP16_KEEP_FP32_OPS) -> onnx.ModelProto:
    """Float16 weights and compute, float32 ``input``/``logits``; ``keep_fp32_ops`` stay float32."""
    float16 = import_float16()
    import warnings

    weights = [onnx.numpy_helper.to_array(t) for t in fp32.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    largest = max((float(np.abs(w).max()) for w in weights if w.size), default=0.0)
    if largest > FP16_MAX:
        raise ValueError(f"a weight of magnitude {largest:.3g} exceeds the float16 range ({FP16_MAX:g})")
    with warnings.catch_warnings():  # "values smaller than min_positive_val are flushed": 1e-7 is below fp16 resolution
        warnings.simplefilter("ignore")
        model = float16.convert_float_to_float16(
            copy.deepcopy(fp32),
            keep_io_types=True,
            max_finite_val=FP16_MAX,  # the converter's default (1e4) would silently clip larger weights
            op_block_list=sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops)),
        )
    model.producer_name, model.producer_version = fp32.producer_name, fp32.producer_version
    return with_precision(model, "fp16")


# ---------------------------------------------------------------- INT8


@dataclass(frozen=True)
class Int8Recipe:
    """Everything besides model and images that decides the calibration ranges and the QDQ graph."""

    method: str = DEFAULT_CALIB_METHOD
    op_types: tuple[str, ...] = INT8_OP_TYPES
    percentile: float = 99.999
    histogram_bins: int = 2048  # percentile; entropy uses ORT's 128 bins / 128 quantized bins
    per_channel: bool = True
    calib_op_types: tuple[str, ...] = CALIB_OP_TYPES  # whose inputs/outputs ORT's calibrator records
    quantize_se: bool = False  # qdq.QUANTIZE_SE: the SE convs (1x1 on a 1x1 map) stay float16
    residual_adds: bool = True  # qdq.Placement: the skip input of a residual Add after a quantized conv
    exclude: tuple[str, ...] = ()  # --int8-exclude: ("auto",) or conv names kept in float16 (in the cache key)
    equalize: bool = False  # --equalize: cross-layer equalization of the FP32 graph calibrated (int8_fixes.py)
    bias_correction: bool = False  # --bias-correction: conv biases corrected by the error's mean (int8_fixes.py)

    def __post_init__(self):
        if self.method not in CALIB_METHODS:
            raise InputError(f"expected one of {', '.join(CALIB_METHODS)}", field="calib_method", value=self.method)

    def ort_method(self):
        from onnxruntime.quantization import CalibrationMethod

        return {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                "minmax": CalibrationMethod.MinMax}[self.method]  # fmt: skip

    def calibrator_options(self) -> dict:
        opts = {"symmetric": True}
        if self.method == "percentile":
            opts.update(percentile=self.percentile, num_bins=self.histogram_bins)
        return opts



@dataclass
class Calibration:
    """What a calibration produced or found: the cache file and how it was obtained."""

    cache: Path
    key: str
    cached: bool
    seconds: float
    images: int
    method: str
    source: str
    notes: list[str] = field(default_factory=list)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ort_minor_version() -> str:
    import onnxruntime

    return ".".join(onnxruntime.__version__.split(".")[:2])


def calibration_key(fp32_onnx: bytes, image_ids: Sequence[tuple[str, str]], recipe: Int8Recipe) -> dict:
    """The fields the cache is keyed by (the SHA-256 of their JSON is the key)."""
    fields = {
        "format": CACHE_FORMAT,
        "fp32_onnx_sha256": sha256_hex(fp32_onnx),
        "images_sha256": sha256_hex(json_text([list(i) for i in image_ids], indent=None).encode()),
        "images": len(image_ids),
        "method": recipe.method,
        "recipe": asdict(recipe),
        "onnxruntime": ort_minor_version(),
    }
    fields["key"] = sha256_hex(json_text(fields, indent=None, sort_keys=True).encode())
    return fields


def cache_path(out_dir: Path, model_name: str, key: str) -> Path:
    return Path(out_dir) / f"{model_name}.int8.calib-{key[:16]}.json"


def load_cache(path: Path, key: str):
    """ORT ``TensorsData`` from a cache file whose key matches, else None (a bad file is ignored)."""
    from onnxruntime.quantization.calibrate import TensorsData

    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        if payload.get("mixnet_deploy", {}).get("key") != key:
            return None
        return TensorsData.from_dict(payload)
    except Exception as exc:  # a corrupted or foreign file: recalibrate and overwrite it
        log.warning("calibration cache %s unusable (%s: %s): recalibrating", path.name, type(exc).__name__, exc)
        return None


def save_cache(path: Path, ranges, key_fields: dict) -> Path:
    from onnxruntime.quantization.calibrate import CalibrationCacheEncoder

    payload = ranges.to_dict()
    payload["smooth_quant"] = False  # what quantize_static's cache reader checks
    payload["mixnet_deploy"] = key_fields
    return write_json(path, payload, cls=CalibrationCacheEncoder, indent=1, sort_keys=True)


class _OneBatch:
    """A calibration data reader over exactly one batch (ORT's get_next protocol)."""

    def __init__(self, batch: dict):
        self._batch = batch

    def get_next(self):
        batch, self._batch = self._batch, None
        return batch


def collect_ranges(fp32_path: Path, batches: Iterable[dict], recipe: Int8Recipe, work_dir: Path, progress=None):
    """Run ORT's calibrator batch by batch; return ``TensorsData`` holding only (lowest, highest)."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, create_calibrator

    calibrator = create_calibrator(
        Path(fp32_path),
        list(recipe.calib_op_types),
        augmented_model_path=str(Path(work_dir) / "augmented.onnx"),
        calibrate_method=recipe.ort_method(),
        extra_options=recipe.calibrator_options(),
    )
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):  # ORT's histogram collector print()s its progress
        for batch in batches:
            calibrator.collect_data(_OneBatch(batch))
            if progress is not None:
                progress(len(next(iter(batch.values()))))
        full = calibrator.compute_data()
    log.debug("%s", chatter.getvalue().strip())
    ranges = {}
    for name, data in full.items():
        lo, hi = data.range_value
        ranges[name] = TensorData(lowest=np.asarray(lo, np.float32), highest=np.asarray(hi, np.float32))
    return TensorsData(full.calibration_method, ranges)


def calibrate(
    fp32_onnx: bytes,
    image_ids: Sequence[tuple[str, str]],
    batches: Callable[[], Iterable[dict]],
    recipe: Int8Recipe,
    out_dir: Path,
    model_name: str,
    source: str,
    progress=None,
    reuse_from: Path | None = None,
) -> Calibration:
    """Find the cache for these inputs (in ``reuse_from``, default ``out_dir``) or calibrate and write it into
    ``out_dir``; ``batches`` is only called on a miss."""
    key_fields = calibration_key(fp32_onnx, image_ids, recipe)
    found = cache_path(reuse_from if reuse_from is not None else out_dir, model_name, key_fields["key"])
    if load_cache(found, key_fields["key"]) is not None:
        return Calibration(found, key_fields["key"], True, 0.0, len(image_ids), recipe.method, source)
    path = cache_path(out_dir, model_name, key_fields["key"])
    elapsed = stopwatch()
    with tempfile.TemporaryDirectory(prefix="mixnet-calib-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        fp32_path.write_bytes(fp32_onnx)
        ranges = collect_ranges(fp32_path, batches(), recipe, Path(tmp), progress)
    seconds = elapsed()
    key_fields["source"] = source
    save_cache(path, ranges, key_fields)
    return Calibration(path, key_fields["key"], False, seconds, len(image_ids), recipe.method, source)


def int8_problems(
    model: onnx.ModelProto, op_types: Sequence[str] = INT8_OP_TYPES, unquantized: Collection[str] = ()
) -> list[str]:
    """What breaks the explicit-quantization contract TensorRT expects; empty when it holds.

    int8 Q/DQ only, every zero point 0, every quantized op's weight a per-channel int8 initializer
    (axis 0, one scale per output channel), biases float (float32 or float16), no operator-format
    quantized ops; ``op_types`` are the operators that must be quantized, but for the nodes named in
    ``unquantized`` (the SE convolutions and ``--int8-exclude``, qdq.py).
    """
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    bad = [f"operator-format op {n.op_type} ({n.name})" for n in model.graph.node if n.op_type in OPERATOR_FORMAT_OPS]
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits.get(node.input[2])
            if zp is None:
                bad.append(f"{node.name}: zero point is not an initializer")
            elif zp.data_type != onnx.TensorProto.INT8:
                bad.append(f"{node.name}: zero point type {onnx.TensorProto.DataType.Name(zp.data_type)}, not INT8")
            elif np.any(onnx.numpy_helper.to_array(zp) != 0):
                bad.append(f"{node.name}: non-zero zero point")
        if node.op_type not in op_types or node.name in unquantized:
            continue
        if len(node.input) > 2 and node.input[2]:
            bias = inits.get(_through_identity(node.input[2], producers))
            if bias is None or bias.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
                bad.append(f"{node.name}: bias is not a float initializer (quantized?)")
        wdq = producers.get(node.input[1])
        if wdq is None or wdq.op_type != "DequantizeLinear" or wdq.input[0] not in inits:
            bad.append(f"{node.name}: weight is not an int8 initializer behind DequantizeLinear")
            continue
        w, scale = inits[wdq.input[0]], inits[wdq.input[1]]
        axis = next((a.i for a in wdq.attribute if a.name == "axis"), 1)
        if w.data_type != onnx.TensorProto.INT8:
            bad.append(f"{node.name}: weight type {onnx.TensorProto.DataType.Name(w.data_type)}")
        out_axis = 0 if node.op_type == "Conv" or _transposed_b(node) else 1
        if tuple(scale.dims) != (w.dims[out_axis],) or axis != out_axis:
            bad.append(f"{node.name}: weight scale {tuple(scale.dims)} on axis {axis} is not per output channel")
        if (
            node.input[0] in inits
            or producers.get(node.input[0]) is None
            or (producers[node.input[0]].op_type != "DequantizeLinear")
        ):
            bad.append(f"{node.name}: activation input is not dequantized int8")
    return bad


def _through_identity(name: str, producers: dict) -> str:
    """The tensor behind a chain of Identity nodes (the exporter shares equal initializers that way)."""
    while name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]
    return name


def _transposed_b(node: onnx.NodeProto) -> bool:
    return bool(next((a.i for a in node.attribute if a.name == "transB"), 0))
