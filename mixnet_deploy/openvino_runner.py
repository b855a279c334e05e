"""The OpenVINO runner: an ONNX file of this toolkit on OpenVINO's CPU plugin (``pip install mixnet-deploy[openvino]``).

Two runtimes of :data:`mixnet_deploy.runtimes.RUNTIMES` reach it, named after the precision OpenVINO computes in:

``openvino``
    ``INFERENCE_PRECISION_HINT=f32`` pinned. Left alone, the CPU plugin computes in bf16 on a CPU with
    avx512_bf16 or AMX: a precision change nobody asked for, which the FP32 file's tolerance does not allow.
``openvino-bf16``
    ``INFERENCE_PRECISION_HINT=bf16``, OpenVINO's own default on such CPUs. The precision it really ran in is read
    back from the compiled model (``inference_precision``: a CPU without bf16 runs f32) and judged like FP16 by
    mixnet-parity (:func:`mixnet_deploy.precision_table.judged_precision`).

Runtime names rather than a hint option: every command that takes ``--runtime`` (and mixnet-serve, which picks its
runner through RUNTIMES) gets both without a new option, and mixnet-bench runs them side by side in one process.
OpenVINO reads the ONNX file itself (no IR conversion step); ``PERFORMANCE_HINT=LATENCY``, one stream, and
``--threads`` as ``INFERENCE_NUM_THREADS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from .contract import META_PRECISION, OUTPUT_NAME, PIXEL_INPUT, input_format_of
from .errors import InputError
from .runner_contract import Runner, check_io, checked_metadata

# runtime name -> OpenVINO's INFERENCE_PRECISION_HINT (element type name)
HINTS = MappingProxyType({"openvino": "f32", "openvino-bf16": "bf16"})
# the element types OpenVINO reports back (ov.Type.get_type_name) -> the names used in reports
_RAN_IN = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
_ORT_TYPES = {1: "tensor(float)", 2: "tensor(uint8)", 10: "tensor(float16)", 11: "tensor(double)"}


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise InputError(f"openvino is not installed ({exc}): expected `pip install mixnet-deploy[openvino]`") from None
    return openvino


def openvino_version() -> str:
    """``2026.4.1`` (OpenVINO's build string without its commit suffix)."""
    return import_openvino().get_version().split("-")[0]


class TensorArg(NamedTuple):
    """An ONNX graph input/output as check_io reads it (ONNX Runtime's NodeArg fields)."""

    name: str
    type: str
    shape: list


def onnx_args(values) -> list[TensorArg]:
    """The graph's ValueInfos as TensorArgs: ``tensor(float)`` types, dims as int or their symbolic name."""
    args = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        args.append(TensorArg(v.name, _ORT_TYPES.get(t.elem_type, f"elem_type {t.elem_type}"), dims))
    return args


class OpenVinoRunner(Runner):
    """An ONNX file compiled by OpenVINO for the CPU, in the precision its runtime name pins."""

    def __init__(self, path: str | os.PathLike, runtime: str = "openvino", threads: int = 0):
        import onnx

        ov = import_openvino()
        self.path = Path(path)
        try:
            proto = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:  # onnx raises DecodeError and friends for files that are not ONNX
            why = str(exc).strip()[:200]
            raise InputError(f"{path}: cannot read it as ONNX ({why}): expected an ONNX model") from None
        self.metadata = checked_metadata({p.key: p.value for p in proto.metadata_props}, str(self.path))
        graph = proto.graph
        initializers = {t.name for t in graph.initializer}
        inputs = onnx_args(v for v in graph.input if v.name not in initializers)
        check_io(str(self.path), inputs, onnx_args(graph.output), self.metadata)
        config = {"INFERENCE_PRECISION_HINT": HINTS[runtime], "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        try:
            self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            why = first[:300]
            raise InputError(f"{self.path}: OpenVINO cannot compile it ({why}): expected an ONNX model") from None
        self.request = self.compiled.create_infer_request()
        self.runtime = runtime
        self.name = f"{self.path.name} [{runtime}]"
        (inp,) = inputs
        self.input_name, self.output_name = inp.name, OUTPUT_NAME
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self.input_format = input_format_of(self.metadata)
        self.input_dtype = self.compiled.input(0).get_element_type().to_dtype()
        self.precision = self.metadata.get(META_PRECISION)
        ran_in = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.inference_precision = _RAN_IN.get(ran_in.get_type_name(), ran_in.get_type_name())
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        self.version = openvino_version()

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.input_format == PIXEL_INPUT and x.dtype != np.uint8:  # a cast would wrap and truncate silently
            raise InputError(f"{self.name}: {x.dtype} input: expected uint8 pixels [N, H, W, 3] (a uint8-nhwc model)")
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        out = self.request.infer({self.input_name: x})[self.compiled.output(self.output_name)]
        return np.array(out, dtype=np.float32)  # a copy: the request reuses its output buffer

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "inference_precision": self.inference_precision,
                "openvino": self.version, "threads": self.threads}  # fmt: skip

    def close(self) -> None:
        self.request = self.compiled = None

