"""The served ends of a graph: raw pixels in (``--input-format uint8-nhwc``), labelled top-k out (``--top-k K``).

Every precision's backbone is made and verified on the float32 NCHW input first (pipeline.py); this module
then adds the ends a client calls, around the unchanged backbone, and checks them:

* ``uint8-nhwc``: the graph input is ``image``, uint8 ``[batch, H, W, 3]`` RGB (decoded, resized and
  centre-cropped to the model size). Inside the graph: ``Cast`` to float32 -> ``Transpose`` to NCHW ->
  ``Div`` 255 -> ``Sub`` mean -> ``Div`` std (the checkpoint's mean/std from the metadata), the very float32
  operations of timm's ToTensor + Normalize, so ONNX Runtime computes the same bits: 5 nodes whose output is
  the backbone's ``input`` tensor, so every backbone node, name and calibration range stays as verified.
  The Cast comes first: TensorRT takes UINT8 only as a network input or output (onnx-tensorrt
  ``ModelImporter.cpp``; its Transpose has no UINT8). The normalisation is not folded into the stem
  convolution: the stem's zero padding is zero in normalised space, and a folded conv would pad raw pixel 0
  (not the mean) at the borders; kept explicit it costs three elementwise ops on 150,528 values (which
  TensorRT may fuse) and stays exact. It runs in float32 in every precision, so the FP16/INT8 backbone sees
  the input it was verified on (the FP16 file's own input Cast follows it). Input bytes per 224 px image:
  150,528 instead of 602,112.
* ``--top-k K``: ``TopK`` over the float32 ``logits`` (K a constant, largest, sorted) -> ``classes``
  (``Cast`` to int32 ``[batch, K]``); ``Softmax`` over the logits, ``GatherElements`` at those classes ->
  ``scores`` (float32 ``[batch, K]``); both beside ``logits`` (kept first): 4 nodes. TensorRT's parser:
  K < 3840, ``sorted`` must be 1, and it casts TopK's indices to INT64 itself (onnx-tensorrt
  ``onnxOpImporters.cpp``, ``docs/operators.md``), hence the int32 Cast.

:func:`check_served` is the verification: the served file on pixels against its own backbone on the same
pixels normalised the timm way (:meth:`mixnet_deploy.data.Preprocess.normalize`), and its top-k against
numpy's top-k of its logits.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .contract import (
    CLASSES_NAME,
    FLOAT_INPUT,
    IMAGE_NAME,
    INPUT_NAME,
    MAX_TOP_K,
    META_CLASS_NAMES,
    META_INPUT_FORMAT,
    META_TOP_K,
    OUTPUT_NAME,
    PIXEL_INPUT,
    SCORES_NAME,
    input_format_of,
)
from .errors import InputError
from .onnx_export import read_metadata, set_metadata

PIXEL_MAX_ABS = 1e-4  # FP32: served logits vs the backbone on timm-preprocessed pixels (the bar)
SCORES_ATOL = 1e-5  # scores vs numpy's softmax of the served logits at the returned classes


@dataclass(frozen=True)
class Ends:
    """What a run serves: the input format, K (0: logits only) and the class names (None: the default)."""

    input_format: str = FLOAT_INPUT
    top_k: int = 0
    class_names: tuple[str, ...] | None = None  # --class-names FILE

    @property
    def changes_graph(self) -> bool:
        return self.input_format != FLOAT_INPUT or self.top_k > 0

    def metadata(self) -> dict[str, str]:
        meta = {META_INPUT_FORMAT: self.input_format, META_TOP_K: str(self.top_k)}
        if self.class_names is not None:
            meta[META_CLASS_NAMES] = "\n".join(self.class_names)
        return meta


def check_top_k(top_k: int | None, num_classes: int | None = None) -> int:
    """``--top-k``: 1..min(classes, 3839); InputError naming the value otherwise (0 means logits only in the
    metadata, but is not a value to ask for)."""
    bound = MAX_TOP_K if num_classes is None else min(num_classes, MAX_TOP_K)
    if top_k is None:
        return 0
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= bound:
        why = f"the model's {num_classes} classes" if num_classes is not None and num_classes <= MAX_TOP_K else (
            f"TensorRT's TopK limit {MAX_TOP_K}")
        raise InputError(f"expected an integer from 1 to {bound} ({why})", field="top_k", value=top_k)
    return top_k


# ---------------------------------------------------------------- graph surgery


def _const(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def add_pixel_input(model: onnx.ModelProto, mean: Sequence[float], std: Sequence[float]) -> onnx.ModelProto:
    """``image`` uint8 [batch, H, W, 3] -> cast, NCHW, normalise -> the backbone's ``input`` (a new model)."""
    model = copy.deepcopy(model)
    graph = model.graph
    (old,) = graph.input
    if old.name != INPUT_NAME:
        raise ValueError(f"graph input {old.name!r}: expected {INPUT_NAME!r} (a float32-nchw backbone)")
    dims = old.type.tensor_type.shape.dim
    batch, height, width = dims[0].dim_param or "batch", dims[2].dim_value, dims[3].dim_value
    channel = (1, 3, 1, 1)
    full = _const(graph, "preprocess.255", np.array(255.0, np.float32))
    mean_c = _const(graph, "preprocess.mean", np.asarray(mean, np.float32).reshape(channel))
    std_c = _const(graph, "preprocess.std", np.asarray(std, np.float32).reshape(channel))
    nodes = [
        helper.make_node("Cast", [IMAGE_NAME], ["preprocess.float"], "preprocess/Cast", to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["preprocess.float"], ["preprocess.nchw"], "preprocess/Transpose",
                         perm=[0, 3, 1, 2]),
        helper.make_node("Div", ["preprocess.nchw", full], ["preprocess.unit"], "preprocess/Div255"),
        helper.make_node("Sub", ["preprocess.unit", mean_c], ["preprocess.centred"], "preprocess/SubMean"),
        helper.make_node("Div", ["preprocess.centred", std_c], [INPUT_NAME], "preprocess/DivStd"),
    ]  # fmt: skip
    kept = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + kept)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(IMAGE_NAME, TensorProto.UINT8, [batch, height, width, 3]))
    return model


def add_top_k(model: onnx.ModelProto, k: int) -> onnx.ModelProto:
    """``logits`` -> TopK(k) -> ``classes`` (int32); Softmax(logits) gathered at them -> ``scores`` (a new model).

    TopK runs on the logits, not on the probabilities: a confident model's softmax underflows to 0.0 for
    most classes, and TopK among equal zeros would return any of them (measured on seeded MixNet-M)."""
    model = copy.deepcopy(model)
    graph = model.graph
    logits = next(o for o in graph.output if o.name == OUTPUT_NAME)
    batch = logits.type.tensor_type.shape.dim[0].dim_param or "batch"
    k_name = _const(graph, "top_k.k", np.array([k], np.int64))
    graph.node.extend([
        helper.make_node("TopK", [OUTPUT_NAME, k_name], ["top_k.logits", "top_k.indices"], "top_k/TopK",
                         axis=-1, largest=1, sorted=1),
        helper.make_node("Softmax", [OUTPUT_NAME], ["top_k.probabilities"], "top_k/Softmax", axis=-1),
        helper.make_node("GatherElements", ["top_k.probabilities", "top_k.indices"], [SCORES_NAME],
                         "top_k/GatherElements", axis=1),
        helper.make_node("Cast", ["top_k.indices"], [CLASSES_NAME], "top_k/Cast", to=TensorProto.INT32),
    ])  # fmt: skip
    graph.output.extend([
        helper.make_tensor_value_info(SCORES_NAME, TensorProto.FLOAT, [batch, k]),
        helper.make_tensor_value_info(CLASSES_NAME, TensorProto.INT32, [batch, k]),
    ])  # fmt: skip
    return model


def serve(model: onnx.ModelProto, ends: Ends, mean: Sequence[float], std: Sequence[float]) -> onnx.ModelProto:
    """The backbone with the served ends and their metadata (``mixnet.input_format``, ``mixnet.top_k``, names)."""
    served = add_pixel_input(model, mean, std) if ends.input_format == PIXEL_INPUT else copy.deepcopy(model)
    if ends.top_k:
        served = add_top_k(served, ends.top_k)
    return set_metadata(served, {**read_metadata(model), **ends.metadata()})


# ---------------------------------------------------------------- verification


def top_k_numpy(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(softmax probabilities, class indices) of the ``k`` largest logits per row, highest first (stable)."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    classes = np.argsort(-z, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(p, classes, axis=1), classes


def top_k_problems(logits: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> list[str]:
    """The graph's top-k against numpy's on its own logits: same logit values at the returned classes (ties
    may come in either order), probabilities within :data:`SCORES_ATOL`."""
    k = classes.shape[1]
    want_p, want_c = top_k_numpy(logits, k)
    bad = []
    if classes.dtype != np.int32 or scores.dtype != np.float32:
        bad.append(f"classes {classes.dtype} / scores {scores.dtype}: expected int32 / float32")
    if np.any(classes < 0) or np.any(classes >= logits.shape[1]):
        return [*bad, "classes outside the model's class range"]
    got_vals = np.take_along_axis(logits, classes.astype(np.int64), axis=1)
    want_vals = np.take_along_axis(logits, want_c, axis=1)
    if not np.array_equal(got_vals, want_vals):
        rows = int(np.sum(np.any(got_vals != want_vals, axis=1)))
        bad.append(f"top-{k} classes differ from numpy's top-{k} of the logits in {rows} of {len(logits)} rows")
    err = float(np.max(np.abs(scores.astype(np.float64) - want_p)))
    if err > SCORES_ATOL:
        bad.append(f"scores differ from softmax(logits) by {err:.3g} > {SCORES_ATOL:g}")
    return bad


@dataclass(frozen=True)
class ServedCheck:
    """What :func:`check_served` measured, for ``<model>.report.json``, and what failed."""

    facts: dict
    problems: tuple[str, ...]


def check_served(
    backbone: bytes, served: bytes, pixels: np.ndarray, pre, precision: str, source: str
) -> ServedCheck:
    """Run both in ONNX Runtime (CPU): the served file on ``pixels`` (uint8 [N, H, W, 3]) in its input format,
    the backbone on ``pre.normalize(pixels)``; FP32 must agree within :data:`PIXEL_MAX_ABS`, FP16/INT8 within
    their precision's tolerance; the top-k must be numpy's top-k of the served logits."""
    from . import precision_table
    from .metrics import compare, failures
    from .runtimes import ort_session

    x = pre.normalize(pixels)
    reference = ort_session(backbone).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    session = ort_session(served)
    meta = session.get_modelmeta().custom_metadata_map
    pixel_input = input_format_of(meta) == PIXEL_INPUT
    outputs = session.run(None, {session.get_inputs()[0].name: pixels if pixel_input else x})
    metrics = compare(reference, outputs[0])
    facts = {
        "input_format": input_format_of(meta),
        "input": {"name": session.get_inputs()[0].name, "type": session.get_inputs()[0].type,
                  "bytes_per_image": int(pixels[0].size * (1 if pixel_input else 4))},
        "outputs": [o.name for o in session.get_outputs()],
        "checked_on": f"{len(pixels)} {source}",
        "max_abs_vs_backbone": metrics.max_abs,
        "min_cosine_vs_backbone": metrics.min_cosine,
    }  # fmt: skip
    if precision_table.row(precision).float32_free:
        problems = failures(metrics, precision_table.row(precision).tolerance)
    else:
        problems = [] if metrics.max_abs <= PIXEL_MAX_ABS else [
            f"logits on pixels differ from the backbone on timm-preprocessed pixels by {metrics.max_abs:.3g} > "
            f"{PIXEL_MAX_ABS:g}"]  # fmt: skip
    if len(outputs) == 3:
        problems += top_k_problems(outputs[0], outputs[1], outputs[2])
        facts["top_k"] = int(outputs[2].shape[1])
    return ServedCheck(facts, tuple(problems))

