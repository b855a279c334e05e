"""The pre-issue-13 INT8 file (ONNX Runtime's quantize_static over the FP32 graph), kept for the benchmarks'
before/after comparisons only: the package makes INT8 as Q/DQ over the FP16 graph (mixnet_deploy.qdq)."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import onnx

from mixnet_deploy.onnx_export import read_metadata, set_metadata
from mixnet_deploy.precision_onnx import Calibration, Int8Recipe, with_precision

QUANTIZER_OPTIONS = {
    "ActivationSymmetric": True,  # zero point 0: what TensorRT's explicit quantization accepts
    "WeightSymmetric": True,
    "QuantizeBias": False,  # biases stay float; TensorRT quantizes them itself
    "AddQDQPairToWeight": False,  # weights stored as int8 initializers + DequantizeLinear
    "DedicatedQDQPair": False,
}


def quantize_int8(fp32_onnx: bytes, calibration: Calibration, recipe: Int8Recipe) -> onnx.ModelProto:
    """QDQ INT8 model over the FP32 graph (ORT's quantize_static): the pre-issue-13 file, for comparison only."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="mixnet-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32_onnx)  # a path, not the proto: quantize_static moves a proto's weights to external data
        with _quiet_ort_logging(), contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(src),
                str(dst),
                calibration_data_reader=None,
                calibration_cache_path=str(calibration.cache),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(recipe.op_types),
                per_channel=recipe.per_channel,
                reduce_range=False,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=recipe.ort_method(),
                extra_options=QUANTIZER_OPTIONS,
            )
        model = onnx.load(str(dst))
    fp32 = onnx.load_from_string(fp32_onnx)
    model.producer_name, model.producer_version = fp32.producer_name, fp32.producer_version
    set_metadata(model, read_metadata(fp32))
    del model.graph.value_info[:]  # shape-inference leftovers of the quantizer; not part of the contract
    return with_precision(model, "int8")


@contextlib.contextmanager
def _quiet_ort_logging():
    """quantize_static warns about pre-processing via the root logger; keep our stderr readable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)
