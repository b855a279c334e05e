"""Precision facts, one frozen row per precision: every stage reads this table and nothing else.

A row says what a precision is called in file names, how close it must stay to its reference
(parity), what a TensorRT network built from its ONNX must carry, which flags select it where
TensorRT has no strong typing (8.6 / 9, trtexec's legacy flags), whether DLA runs it, what ONNX
Runtime's TensorRT execution provider (and Triton's onnxruntime backend) calls it, and how it ranks
for speed. Adding a precision is one row here plus its tests (and its ONNX maker in precision_onnx.py).

No stage keeps a copy: they look rows up through :func:`row` at call time, so the tests that
replace a row (``monkeypatch.setattr(precision_table, "PRECISIONS", ...)``) reach every stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .contract import ONNX_SUFFIX, onnx_stem
from .errors import InputError


@dataclass(frozen=True)
class Tolerance:
    max_abs: float | None  # largest allowed |candidate - reference| over all logits, per unit of max(1, |logit|)
    # (float32 rounding grows with the logits: random weights give logits in the hundreds on photos)
    min_cosine: float  # per-sample cosine similarity, worst sample
    min_mean_cosine: float
    min_top1: float | None  # fraction of samples whose argmax agrees
    min_top5_overlap: float | None  # mean |top5(candidate) & top5(reference)| / 5


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 / fp16 / int8: mixnet.precision metadata, engine manifests, flags
    file_tag: str  # in ONNX file names: mixnet_s{file_tag}.onnx ("" for the fp32 reference file)
    tolerance: Tolerance  # against its reference (PyTorch for fp32, the FP32 ONNX for the others)
    trt_tensor_type: str | None  # tensors a strongly typed TensorRT network of this ONNX must carry
    builder_flag: str | None  # weakly typed builds (TensorRT < 10, DLA on 10.x): Polygraphy CreateConfig keyword;
    # also ONNX Runtime's TensorRT provider option trt_<builder_flag>_enable
    trtexec_legacy_flag: str  # trtexec 8.6/9, and DLA on 10.x (trtexec.sh picks by trtexec's banner)
    dla: bool  # DLA runs it (Jetson: FP16 / INT8 only)
    trt_precision_mode: str  # ONNX Runtime TensorRT EP / Triton onnxruntime backend `precision_mode`
    speed_rank: int  # 0 = fastest: what Triton's "auto" picks, and a layer's lowest precision in an engine
    inspector_words: tuple[str, ...]  # lower-case words of TensorRT's engine inspector "Format/Datatype"
    option: str | None  # the ExportConfig field whose flag asks for it; None: always written (the reference)
    float32_free: bool  # the file may hold no float32 compute tensor besides the I/O casts (qdq.facts_problems)
    quantized: bool  # INT8 Q/DQ: opset >= 19 with float16 scales (qdq.facts_problems), calibrated


PRECISIONS: Mapping[str, Precision] = MappingProxyType(
    {
        "fp32": Precision(
            name="fp32", file_tag="", trt_tensor_type=None, builder_flag=None, trtexec_legacy_flag="", dla=False,
            trt_precision_mode="FP32", speed_rank=2, inspector_words=("fp32", "float"),
            option=None, float32_free=False, quantized=False,
            # float32 graph vs float32 PyTorch: only summation order differs.
            tolerance=Tolerance(max_abs=1e-3, min_cosine=0.99999, min_mean_cosine=0.99999, min_top1=None,
                                min_top5_overlap=None),
        ),
        "fp16": Precision(
            name="fp16", file_tag=".fp16", trt_tensor_type="HALF", builder_flag="fp16", trtexec_legacy_flag="--fp16",
            dla=True, trt_precision_mode="FP16", speed_rank=1, inspector_words=("fp16", "half"),
            option="fp16", float32_free=True, quantized=False,
            # float16 weights and activations vs the FP32 graph (ORT CPU, held-out inputs). No max_abs: it scales
            # with the logits (random-weight oracles reach |logit| ~ 100); measured worst cosine 0.99999+
            # (docs/precision.md).
            tolerance=Tolerance(max_abs=None, min_cosine=0.9995, min_mean_cosine=0.9999, min_top1=None,
                                min_top5_overlap=0.8),
        ),
        "int8": Precision(
            name="int8", file_tag=".int8", trt_tensor_type="INT8", builder_flag="int8",
            trtexec_legacy_flag="--fp16 --int8",  # Q/DQ over an FP16 graph: weakly typed builds need both
            dla=True, trt_precision_mode="INT8", speed_rank=0, inspector_words=("int8",),
            option="int8", float32_free=True, quantized=True,
            # int8 QDQ vs the FP32 graph on held-out images; the bar: mean cosine >= 0.99, top-5 overlap >= 0.7.
            tolerance=Tolerance(max_abs=None, min_cosine=0.98, min_mean_cosine=0.99, min_top1=None,
                                min_top5_overlap=0.7),
        ),
    }
)  # fmt: skip


# A precision a runtime may compute a file in below the file's own (OpenVINO's bf16 INFERENCE_PRECISION_HINT) -> the row
# whose tolerance judges that run: bf16 (8 significant bits, float32's range) like FP16, the reduced float precision
# this table verifies; never a tighter row than the file's own (an INT8 file stays INT8's).
RUNTIME_PRECISIONS: Mapping[str, str] = MappingProxyType({"bf16": "fp16"})


def judged_precision(precision: str | None, ran_in: str | None = None) -> str | None:
    """The row that judges a run of a ``precision`` file computed in ``ran_in`` (None: the file's precision)."""
    reduced = RUNTIME_PRECISIONS.get(ran_in)
    if reduced is None or precision not in PRECISIONS:
        return precision
    return reduced if row(reduced).speed_rank < row(precision).speed_rank else precision


def names() -> tuple[str, ...]:
    """The precisions in table order (fp32 first: the reference every other one is made from)."""
    return tuple(PRECISIONS)


def by_speed() -> tuple[str, ...]:
    """Fastest first (int8, fp16, fp32)."""
    return tuple(sorted(PRECISIONS, key=lambda p: PRECISIONS[p].speed_rank))


def row(precision: str) -> Precision:
    """The row of ``precision``; InputError naming the known ones otherwise."""
    found = PRECISIONS.get(precision)
    if found is None:
        raise InputError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return found


def weak_typing_flags(precision: str) -> tuple[str, ...]:
    """The builder flags a weakly typed build (TensorRT 8.6/9, DLA on 10.x, ONNX Runtime's TensorRT provider) of
    ``precision``'s file needs: its own and those of the slower reduced precisions, since each file computes
    its float parts in the next one up (the INT8 file is INT8 Q/DQ over an FP16 graph: int8 -> fp16 + int8)."""
    rank = row(precision).speed_rank
    return tuple(r.builder_flag for r in PRECISIONS.values() if r.builder_flag and r.speed_rank >= rank)


def tolerances() -> dict[str, Tolerance]:
    """precision -> tolerance, in table order."""
    return {p: r.tolerance for p, r in PRECISIONS.items()}


# ---------------------------------------------------------------- file names, computed here only


def artifact_name(model_name: str, precision: str) -> str:
    """``mixnet_s.onnx``, ``mixnet_s.fp16.onnx``, ``mixnet_s.int8.onnx``."""
    return f"{model_name}{row(precision).file_tag}{ONNX_SUFFIX}"


def model_stem(onnx_name: str, precision: str) -> str:
    """``mixnet_s.fp16.onnx`` (fp16) -> ``mixnet_s``; ``mixnet_s.onnx`` (fp32) -> ``mixnet_s``."""
    stem = onnx_stem(onnx_name) if onnx_name.endswith(ONNX_SUFFIX) else Path(onnx_name).stem
    return stem[: -len(precision) - 1] if stem.endswith(f".{precision}") else stem


def engine_name(onnx_name: str, precision: str, tool: str = "") -> str:
    """``mixnet_s.fp16.onnx`` -> ``mixnet_s.fp16.engine``; ``tool="trtexec"``: ``mixnet_s.fp16.trtexec.engine``.

    Engines always carry the precision, fp32 too (``mixnet_s.fp32.engine``).
    """
    middle = f".{tool}" if tool else ""
    return f"{model_stem(onnx_name, precision)}.{precision}{middle}.engine"
