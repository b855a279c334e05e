"""INT8 Q/DQ placed on the FP16 graph, for strongly typed TensorRT engines.

A strongly typed engine computes every tensor in the type the ONNX file gives it, so the INT8 file
is the FP16 file (:func:`precision.to_fp16`: float16 weights and activations, a Cast after
``input`` and before ``logits``) with QuantizeLinear/DequantizeLinear pairs inserted, placed the
way TensorRT's developer guide recommends ("Q/DQ layer-placement recommendations"):

* every input of a quantized convolution is quantized (activation: per tensor, from the calibrated
  range; weight: per output channel, int8 initializer behind a DequantizeLinear), never its output;
* the residual (skip) input of every Add after a quantized convolution goes through the same Q/DQ
  as its other consumers, so TensorRT can fuse the Add into the convolution;
* scales are float16 (the DequantizeLinear output type, hence the compute type, is the scale's type;
  float16 scales need opset 19, :data:`QDQ_OPSET`), zero points int8 0, biases stay float16;
* the SE convolutions (1x1 on a 1x1 map) are not quantized (:data:`QUANTIZE_SE`, measured in
  docs/precision.md) and neither are the layers excluded by ``--int8-exclude`` (sensitivity.py).

The scales follow TensorRT's convention ``amax / 127``; weights are rounded with the float16 scale
that is stored (rounded up, so no weight is clipped), so the file dequantizes exactly to what was meant.
:func:`graph_facts` counts what the issue measures (float32 compute tensors by ONNX type inference,
Q/DQ nodes, residual Adds quantized) and :func:`facts_problems` turns them into export checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import precision_table

QDQ_OPSET = 19  # float16 scales in Q/DQ; TensorRT 10.x's ONNX parser reads opsets 9-20
QUANTIZE_SE = False  # measured: docs/precision.md ("SE convolutions")
INT8_MAX = 127
FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)


@dataclass(frozen=True)
class Placement:
    """Where Q/DQ goes: which convolutions stay float16 and whether residual Adds get a quantized input."""

    exclude: tuple[str, ...] = ()  # Conv node names kept in float16
    quantize_se: bool = QUANTIZE_SE
    residual_adds: bool = True


def fp16_scale(amax: np.ndarray) -> np.ndarray:
    """``amax / 127`` as float16, rounded up to the next float16 (no value beyond amax is clipped)."""
    want = np.maximum(np.asarray(amax, np.float64) / INT8_MAX, FP16_TINY)
    scale = np.array(want, np.float16)
    return np.where(scale < want, np.nextafter(scale, np.float16(np.inf)), scale).astype(np.float16)


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (axis 0) symmetric int8 weights and their float16 scales."""
    amax = np.abs(w.reshape(len(w), -1)).max(axis=1)
    scale = fp16_scale(amax)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.rint(w / scale.astype(np.float32).reshape(shape)), -INT8_MAX, INT8_MAX)
    return q.astype(np.int8), scale


def conv_names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv"]


def conv_inputs(model: onnx.ModelProto) -> list[str]:
    """The tensors the convolutions read (bias correction measures their channel means), each once."""
    return list(dict.fromkeys(n.input[0] for n in model.graph.node if n.op_type == "Conv"))


def se_convs(fp32: onnx.ModelProto) -> set[str]:
    """Conv nodes whose input is a 1x1 map (the squeeze-excitation convolutions), by ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(fp32)
    dims = {}
    for v in (*inferred.graph.value_info, *inferred.graph.input):
        shape = v.type.tensor_type.shape.dim
        dims[v.name] = [d.dim_value if d.HasField("dim_value") else None for d in shape]
    return {
        n.name for n in fp32.graph.node
        if n.op_type == "Conv" and len(dims.get(n.input[0], ())) == 4 and dims[n.input[0]][2:] == [1, 1]
    }  # fmt: skip


def residual_adds(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str, str]]:
    """(Add, skip input, block input) for every Add of two computed tensors where one is an ancestor of the other."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consts = {t.name for t in model.graph.initializer}
    found = []
    for node in (n for n in model.graph.node if n.op_type == "Add" and len(n.input) == 2):
        a, b = node.input
        if a in consts or b in consts:
            continue
        a_src, b_src = _behind_qdq(a, producers), _behind_qdq(b, producers)
        if b_src in _ancestors(a_src, producers):
            found.append((node, b, a))
        elif a_src in _ancestors(b_src, producers):
            found.append((node, a, b))
    return found


def _behind_qdq(name: str, producers: Mapping[str, onnx.NodeProto]) -> str:
    """The tensor a DequantizeLinear(QuantizeLinear(x)) pair stands for (x), else the name itself."""
    dq = producers.get(name)
    if dq is not None and dq.op_type == "DequantizeLinear":
        q = producers.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            return q.input[0]
    return name


def _ancestors(name: str, producers: Mapping[str, onnx.NodeProto]) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        node = producers.get(todo.pop())
        for i in node.input if node is not None else ():
            if i and i not in seen:
                seen.add(i)
                todo.append(i)
    return seen


def _conv_sources(name: str, producers: Mapping[str, onnx.NodeProto]) -> list[onnx.NodeProto]:
    """The Conv(s) a tensor comes straight from: a Conv, or a Concat of Convs (a split MixConv), also behind the Add of
    their biases after the Concat (lowering.bias_after_concat: one input computed, one an initializer); else []."""
    node = producers.get(name)
    if node is not None and node.op_type == "Add" and sum(i in producers for i in node.input) == 1:
        return _conv_sources(next(i for i in node.input if i in producers), producers)
    if node is not None and node.op_type == "Conv":
        return [node]
    if node is not None and node.op_type == "Concat":
        parts = [producers.get(i) for i in node.input]
        if all(p is not None and p.op_type == "Conv" for p in parts):
            return parts
    return []


class _QdqWriter:
    """Adds shared Q/DQ pairs to a float16 graph: one per activation tensor, one per weight."""

    def __init__(self, fp16: onnx.ModelProto, fp32: onnx.ModelProto, amax: Mapping[str, float]):
        self.model, self.amax = fp16, amax
        self.fp32_weights = {t.name: t for t in fp32.graph.initializer}
        self.inits = {t.name: t for t in fp16.graph.initializer}
        self.producers = {o: n for n in fp16.graph.node for o in n.output}
        self.done: dict[str, str] = {}
        self.new_nodes: list[onnx.NodeProto] = []

    def _add_init(self, array: np.ndarray, name: str) -> str:
        self.model.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def _pair(self, src: str, scale: str, zero: str, axis: int | None, quantized: bool) -> str:
        extra = {} if axis is None else {"axis": axis}
        q_out = src
        if not quantized:
            q_out = f"{src}_quantized"
            self.new_nodes.append(helper.make_node("QuantizeLinear", [src, scale, zero], [q_out],
                                                   name=f"{src}_QuantizeLinear", **extra))  # fmt: skip
        dq_out = f"{src}_dequantized"
        self.new_nodes.append(helper.make_node("DequantizeLinear", [q_out, scale, zero], [dq_out],
                                               name=f"{src}_DequantizeLinear", **extra))  # fmt: skip
        return dq_out

    def activation(self, tensor: str) -> str:
        """DequantizeLinear output standing for ``tensor`` (created once, shared by all consumers)."""
        if tensor not in self.done:
            amax = self._amax(tensor)
            scale = self._add_init(fp16_scale(np.float32(amax)), f"{tensor}_scale")
            zero = self._add_init(np.zeros((), np.int8), f"{tensor}_zero_point")
            self.done[tensor] = self._pair(tensor, scale, zero, None, quantized=False)
        return self.done[tensor]

    def range_name(self, tensor: str) -> str:
        """The FP32 graph's name of a float16 tensor: the float16 Cast after ``input`` stands for ``input``."""
        cast = self.producers.get(tensor)
        if tensor not in self.amax and cast is not None and cast.op_type == "Cast":
            return cast.input[0]
        return tensor

    def _amax(self, tensor: str) -> float:
        name = self.range_name(tensor)
        if name not in self.amax:
            raise ValueError(f"no calibrated range for tensor {tensor!r}: the calibration cache lacks it")
        return float(self.amax[name])

    def initializer(self, name: str) -> str:
        """The initializer behind ``name`` (through the exporter's Identity nodes)."""
        while name not in self.inits and self.producers.get(name) is not None:
            name = self.producers[name].input[0]
        return name

    def weight(self, name: str) -> str:
        """DequantizeLinear output standing for a conv weight: int8 per output channel, float16 scales."""
        name = self.initializer(name)
        if name not in self.done:
            w = numpy_helper.to_array(self.fp32_weights[name]).astype(np.float32)
            q, scale = quantize_weight(w)
            qname = self._add_init(q, f"{name}_quantized")
            sname = self._add_init(scale, f"{name}_scale")
            zname = self._add_init(np.zeros(len(q), np.int8), f"{name}_zero_point")
            self.done[name] = self._pair(qname, sname, zname, 0, quantized=True)
        return self.done[name]

    def correct_bias(self, node: onnx.NodeProto, tensor: str, weight: str, means) -> None:
        """Subtract the mean output error of quantized conv ``node`` (int8_fixes.bias_shift) from its bias."""
        from .int8_fixes import bias_shift

        w = numpy_helper.to_array(self.fp32_weights[self.initializer(weight)]).astype(np.float32)
        q, scale = quantize_weight(w)
        wq = q.astype(np.float32) * scale.astype(np.float32).reshape(-1, 1, 1, 1)
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        source = self.range_name(tensor)
        shift = bias_shift(w, wq, group, means.plain[source], means.clipped[source])
        bias = np.zeros(len(w), np.float32)
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(self.fp32_weights[self.initializer(node.input[2])]).astype(np.float32)
        name = self._add_init((bias - shift).astype(np.float16), f"{node.name}_bias_corrected")
        if len(node.input) > 2:
            node.input[2] = name
        else:
            node.input.append(name)


class Int8Builder:
    """Makes INT8 files of one FP32 graph for any :class:`Placement`; the FP16 conversion is done once."""

    def __init__(self, fp32: onnx.ModelProto, amax: Mapping[str, float], means=None):
        """``means``: int8_fixes.InputMeans of the conv inputs: correct the biases of quantized convs (None: don't)."""
        from .precision_onnx import to_fp16

        self.fp32, self.amax, self.means = fp32, amax, means
        self.fp16 = to_fp16(fp32)
        self.convs = conv_names(fp32)
        self.se = se_convs(fp32)

    def candidates(self, placement: Placement = Placement()) -> list[str]:
        """The convolutions a placement may quantize (all but the SE ones unless quantize_se)."""
        return [c for c in self.convs if placement.quantize_se or c not in self.se]

    def unquantized(self, placement: Placement) -> set[str]:
        return set(self.convs) - set(self.candidates(placement)) | set(placement.exclude)

    def build(self, placement: Placement = Placement()) -> onnx.ModelProto:
        """The FP16 graph with Q/DQ on the inputs of every quantized convolution and on the skip input of
        every residual Add after one; KeyError for an excluded name that is no Conv node."""
        from .precision_onnx import with_precision

        unknown = sorted(set(placement.exclude) - set(self.convs))
        if unknown:
            raise KeyError(unknown[0])
        skip = self.unquantized(placement)
        model = onnx.ModelProto()
        model.CopyFrom(self.fp16)
        writer = _QdqWriter(model, self.fp32, self.amax)
        producers = {o: n for n in model.graph.node for o in n.output}
        residuals = [
            (add, skip_in, _conv_sources(block_in, producers)) for add, skip_in, block_in in residual_adds(model)
        ]
        quantized = set()
        for node in model.graph.node:
            if node.op_type == "Conv" and node.name not in skip:
                tensor, weight = node.input[0], node.input[1]
                node.input[0] = writer.activation(tensor)
                node.input[1] = writer.weight(weight)
                if self.means is not None:
                    writer.correct_bias(node, tensor, weight, self.means)
                quantized.add(node.name)
        for add, skip_input, sources in residuals if placement.residual_adds else ():
            if sources and all(s.name in quantized for s in sources):
                add.input[list(add.input).index(skip_input)] = writer.activation(skip_input)
        _finish(model, writer.new_nodes)
        return with_precision(model, "int8")


def _finish(model: onnx.ModelProto, new_nodes: list[onnx.NodeProto]) -> None:
    """Put each new Q/DQ node right after the producer of what it reads, drop initializers nothing reads,
    raise the opset for float16 scales."""
    after: dict[str, list[onnx.NodeProto]] = {}
    for node in new_nodes:  # a DequantizeLinear reads its QuantizeLinear, created just before it
        source = node.input[0]
        owner = next((k for k, group in after.items() if any(source in n.output for n in group)), source)
        after.setdefault(owner, []).append(node)
    produced = {o for n in model.graph.node for o in n.output}
    nodes = [n for source, group in after.items() if source not in produced for n in group]
    for node in model.graph.node:
        nodes.append(node)
        for out in node.output:
            nodes.extend(after.get(out, ()))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = max(entry.version, QDQ_OPSET)


def float32_tensors(model: onnx.ModelProto) -> list[str]:
    """Node outputs that ONNX type inference finds float32, besides the Cast that writes a graph output."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    outputs = {o.name for o in model.graph.output}
    found = []
    for node in inferred.graph.node:
        for out in node.output:
            if types.get(out) == TensorProto.FLOAT and not (node.op_type == "Cast" and out in outputs):
                found.append(out)
    return found


def graph_facts(model: onnx.ModelProto) -> dict:
    """What the issue measures on a precision file: float32 compute tensors, Q/DQ, quantized convs and Adds."""
    producers = {o: n for n in model.graph.node for o in n.output}
    f32 = float32_tensors(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    adds = residual_adds(model)
    quantized_adds = [a.name for a, skip, _ in adds if _is_dq(producers.get(skip))]
    return {
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0),
        "float32_tensors": len(f32),
        "float32_examples": f32[:3],
        "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node),
        "convs": len(convs),
        "convs_quantized": sum(_is_dq(producers.get(c.input[0])) for c in convs),
        "residual_adds": len(adds),
        "residual_adds_quantized": len(quantized_adds),
        "subnormal_scales": _subnormal_scales(model),
        "scale_types": sorted(
            {TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer if t.name.endswith("_scale")}
        ),  # fmt: skip
    }


def _subnormal_scales(model: onnx.ModelProto) -> int:
    """float16 scale values below the smallest normal float16 (2**-14): fewer than 255 levels for their channel."""
    tiny = np.finfo(np.float16).tiny
    return sum(
        int((numpy_helper.to_array(t) < tiny).sum())
        for t in model.graph.initializer
        if t.name.endswith("_scale") and t.data_type == TensorProto.FLOAT16
    )


def _is_dq(node: onnx.NodeProto | None) -> bool:
    return node is not None and node.op_type == "DequantizeLinear"


def facts_problems(facts: dict, precision: str) -> list[str]:
    """Export checks on :func:`graph_facts`: no float32 compute (FP16/INT8), float16 scales at opset >= 19
    (INT8); empty when all hold. Which convolutions are quantized is precision.int8_problems' check."""
    bad = []
    row = precision_table.row(precision)
    if row.float32_free and facts["float32_tensors"]:
        bad.append(
            f"{facts['float32_tensors']} float32 compute tensors (e.g. {facts['float32_examples'][0]!r}), "
            "expected 0 besides the I/O casts"
        )
    if row.quantized:
        if facts["opset"] < QDQ_OPSET:
            bad.append(f"opset {facts['opset']} < {QDQ_OPSET} (float16 Q/DQ scales)")
        if facts["scale_types"] != ["FLOAT16"]:
            bad.append(f"Q/DQ scale types {facts['scale_types']}, expected ['FLOAT16']")
    return bad


def amax_of(ranges) -> dict[str, float]:
    """max |x| per tensor from ONNX Runtime's ``TensorsData`` (the calibration cache)."""
    out = {}
    for name, data in ranges.items():
        lo, hi = data.range_value
        out[name] = float(max(np.max(np.abs(lo)), np.max(np.abs(hi))))
    return out


def ort_cpu_casts(blob: bytes) -> dict:
    """Where ONNX Runtime's CPU provider does not run a float16 node in float16: it inserts Casts
    (``InsertedPrecisionFreeCast_*``) to float32 around nodes it has no float16 kernel for. Counted
    on the session's optimized graph: casts each way and the op types fed float32 by them."""
    import tempfile
    from collections import Counter
    from pathlib import Path

    from .runtimes import import_onnxruntime

    ort = import_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="mixnet-ort-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(opts.optimized_model_filepath)
    inserted = [n for n in optimized.graph.node if n.op_type == "Cast" and n.name.startswith("InsertedPrecisionFree")]
    to = Counter(next(a.i for a in n.attribute if a.name == "to") for n in inserted)
    up = {n.output[0] for n in inserted if next(a.i for a in n.attribute if a.name == "to") == TensorProto.FLOAT}
    fed = Counter(n.op_type for n in optimized.graph.node if n.op_type != "Cast" and any(i in up for i in n.input))
    return {
        "to_float32": to[TensorProto.FLOAT],
        "to_float16": to[TensorProto.FLOAT16],
        "float32_nodes": dict(sorted(fed.items())),
    }
