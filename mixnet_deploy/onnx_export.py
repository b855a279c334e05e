"""torch -> ONNX: the folded model as a TensorRT-parsable graph, checked, with metadata.

The graph: input ``input`` float32 ``[batch, 3, H, W]`` (symbolic batch), output ``logits``;
mixed depthwise convs as Split -> one Conv per kernel size -> Concat; no BatchNormalization and
no sequence ops. The export is deterministic: the same weights give a byte-identical file.
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from collections.abc import Mapping

import onnx
import onnx.shape_inference
import torch

from . import __version__
from .arch import VariantSpec
from .contract import (
    CLASSES_NAME,
    INPUT_NAME,
    META_BN_FOLDED,
    META_CROP_PCT,
    META_INPUT_SIZE,
    META_INTERPOLATION,
    META_MDCONV,
    META_MEAN,
    META_MODEL,
    META_NUM_CLASSES,
    META_PADDING,
    META_PRECISION,
    META_STD,
    META_TOP_K,
    META_VARIANT,
    META_WEIGHTS_LAYOUT,
    META_WEIGHTS_SHA256,
    MIN_OPSET,
    OUTPUT_NAME,
    SCORES_NAME,
    input_format_of,
    input_name,
)
from .errors import VerificationError
from .model import fix_input_size
from .weights import WeightsInfo

# Operators the graphs of this toolkit use; all are supported by TensorRT's ONNX parser.
TRT_SAFE_OPS = frozenset(
    {
        "Add", "Cast", "Concat", "Constant", "Conv", "DequantizeLinear", "Div", "Flatten", "GatherElements", "Gemm",
        "GlobalAveragePool", "Identity", "MatMul", "Mul", "QuantizeLinear", "ReduceMean", "Relu",
        "Reshape", "Sigmoid", "Softmax", "Split", "Sub", "TopK", "Transpose",
    }
)  # fmt: skip  # Div, GatherElements, Softmax, Sub, TopK, Transpose: the served ends only (graph_io.py)


def build_metadata(
    spec: VariantSpec, weights: WeightsInfo, img_size: int, precision: str = "fp32", mdconv: str = "split"
) -> dict[str, str]:
    """The ``metadata_props`` every artifact carries (read back by parity, bench and Triton)."""
    return {
        META_VARIANT: spec.name,
        META_MODEL: spec.model_name,
        META_PADDING: spec.padding,
        META_PRECISION: precision,
        META_INPUT_SIZE: str(img_size),
        META_NUM_CLASSES: str(spec.num_classes),
        META_MEAN: ",".join(f"{v:g}" for v in spec.mean),
        META_STD: ",".join(f"{v:g}" for v in spec.std),
        META_INTERPOLATION: spec.interpolation,
        META_CROP_PCT: f"{spec.crop_pct:g}",
        META_MDCONV: mdconv,
        META_BN_FOLDED: "true",
        META_WEIGHTS_SHA256: weights.sha256,
        META_WEIGHTS_LAYOUT: weights.layout,
        "mixnet_deploy.version": __version__,
    }


def expected_io(metadata: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The graph's input and output names its ``mixnet.*`` metadata promises (--input-format, --top-k)."""
    outputs = [OUTPUT_NAME, SCORES_NAME, CLASSES_NAME] if int(metadata.get(META_TOP_K) or 0) else [OUTPUT_NAME]
    return [input_name(input_format_of(metadata))], outputs


def set_metadata(model: onnx.ModelProto, metadata: Mapping[str, str]) -> onnx.ModelProto:
    """Replace ``metadata_props`` (sorted, so files are reproducible)."""
    del model.metadata_props[:]
    for key in sorted(metadata):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(metadata[key])
    return model


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def to_onnx(model: torch.nn.Module, img_size: int, opset: int = MIN_OPSET) -> onnx.ModelProto:
    """Trace an eval-mode model into an ONNX ModelProto with a symbolic batch dimension.

    Uses the TorchScript exporter (``dynamo=False``): it emits Split/Conv/Concat for the mixed
    convs directly, keeps the parameter names of the state_dict, and is deterministic. TensorFlow
    SAME padding (``tf_*`` variants) is fixed for ``img_size`` first, so every stride-2 conv is one
    ``Conv`` with constant, asymmetric ``pads`` (no Pad node, no shape arithmetic in the graph).
    """
    model = fix_input_size(model, img_size)
    dummy = torch.zeros(1, 3, img_size, img_size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (dummy,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    proto = tidy(onnx.load_from_string(buf.getvalue()))
    proto.producer_name = "mixnet-deploy"
    proto.producer_version = __version__
    return proto


NO_OPS = ("Identity", "Constant")  # compute nothing: tidy() removes them, check_graph refuses them


def tidy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without nodes that compute nothing (in place; node count as onnxslim 0.1.98 leaves it):

    - ``Identity``: its consumers read its input instead. torch.onnx's initializer dedup leaves
      ``Identity(initializer)`` where two parameters are equal (14 in S: SE biases); tools that look for a Conv's bias
      initializer (ONNX Runtime's quantizer: "bias not an initializer") miss it behind one. One initializer may feed
      several nodes in ONNX.
    - ``Constant``: its tensor becomes an initializer of the same name (the split sizes of every ``Split``).
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.output[0] not in outputs}
    kept = []
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None and node.output[0] not in outputs:
            tensor = graph.initializer.add()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
        elif not (node.op_type == "Identity" and node.output[0] in alias):
            kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            while name in alias:
                name = alias[name]
            node.input[i] = name
    del graph.node[:]
    graph.node.extend(kept)
    return model


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def check_graph(model: onnx.ModelProto) -> None:
    """ONNX checker (full) plus the structural promises of this toolkit.

    Raises VerificationError (exit 1): a graph this toolkit made that breaks them is a failed verification,
    not bad input.
    """
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VerificationError(f"ONNX checker refused the graph: {first}") from exc
    ops = set(op_counts(model))
    if "BatchNormalization" in ops:
        raise VerificationError("graph still holds BatchNormalization nodes: BN folding missed a layer")
    idle = sorted(ops & set(NO_OPS))
    if idle:
        raise VerificationError(f"graph holds nodes that compute nothing ({', '.join(idle)}): expected them removed")
    unsupported = sorted(ops - TRT_SAFE_OPS)
    if unsupported:
        raise VerificationError(f"graph uses operators outside the TensorRT-safe set: {', '.join(unsupported)}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise VerificationError(f"graph opset {opset} < {MIN_OPSET}")
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    expected = expected_io(read_metadata(model))
    if names != expected:
        raise VerificationError(f"graph inputs/outputs are {names}, expected {expected}")
