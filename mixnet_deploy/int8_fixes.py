"""Two standard INT8 fixes for depthwise-separable networks, on the ONNX graphs the INT8 file is built from.

* **Cross-layer equalization** (Nagel et al. 2019, "Data-Free Quantization Through Weight
  Equalization and Bias Correction"): a depthwise convolution followed, through a ReLU, by a
  pointwise one computes the same function when depthwise output channel ``i`` is divided by
  ``s_i > 0`` and pointwise input channel ``i`` multiplied by it (ReLU is positively homogeneous).
  ``s_i = sqrt(r1_i / r2_i)`` with ``r1`` the depthwise channel's weight range and ``r2`` the pointwise
  input channel's, makes both ranges ``sqrt(r1_i r2_i)``: one INT8 range then fits the channels of the
  activation between them much better. Only exact pairs are rewritten: the depthwise output (a
  depthwise Conv, or the Concat of a split MixConv's) feeds only a Relu whose output feeds only a 1x1
  Conv (or the Split of a split grouped 1x1). Pairs through Swish or a squeeze-excitation are left as
  they are (Swish is not homogeneous); :class:`Equalized` counts both.
* **Bias correction** of the quantization error's mean: with ``mu_i`` the mean of a quantized conv's
  input channel ``i`` on the calibration images (FP32 graph) and ``mu'_i`` the mean of the same
  values clipped to the calibrated range, the conv's output channel ``c`` is off on average by
  ``sum_i sum_k (Wq[c,i,k] mu'_i - W[c,i,k] mu_i)``: the weight rounding's and the activation
  clipping's shift of the mean (ignoring the zero padding at the borders). That amount is subtracted
  from the conv's bias in the INT8 file (:func:`bias_shift`, applied by :class:`qdq.Int8Builder`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

EPS = 1e-12


@dataclass(frozen=True)
class Equalized:
    """What :func:`equalize` did: pairs rescaled, and depthwise convs left alone because of what follows them."""

    pairs: int
    skipped: int
    channels: int

    def describe(self) -> str:
        return (
            f"cross-layer equalization: {self.pairs} depthwise -> ReLU -> pointwise pairs ({self.channels} "
            f"channels) rescaled; {self.skipped} depthwise convs not followed by ReLU -> 1x1 conv left as they are"
        )


def _attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.inits = {t.name: t for t in model.graph.initializer}
        self.producers = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in model.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in model.graph.output}
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, name: str) -> np.ndarray:
        """A float32 initializer (through Identity nodes), cached until written back."""
        name = self.source(name)
        if name not in self.arrays:
            self.arrays[name] = numpy_helper.to_array(self.inits[name]).astype(np.float32)
        return self.arrays[name]

    def source(self, name: str) -> str:
        while name not in self.inits and name in self.producers and self.producers[name].op_type == "Identity":
            name = self.producers[name].input[0]
        return name

    def shared(self, name: str) -> bool:
        """An initializer read by more than one node (directly or through Identity): not safe to rescale."""
        src = self.source(name)
        readers = [n for n in self.model.graph.node if src in n.input or n.op_type == "Identity" and n.input[0] == src]
        return len(readers) > 1

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        found = self.consumers.get(tensor, [])
        return found[0] if len(found) == 1 and tensor not in self.outputs else None

    def write_back(self) -> None:
        for name, array in self.arrays.items():
            self.inits[name].CopyFrom(numpy_helper.from_array(array, name))


def _is_depthwise(g: _Graph, node: onnx.NodeProto | None) -> bool:
    if node is None or node.op_type != "Conv" or len(node.input) < 2 or g.source(node.input[1]) not in g.inits:
        return False
    w = g.inits[g.source(node.input[1])]
    return w.dims[1] == 1 and _attr(node, "group", 1) == w.dims[0] > 1


def _depthwise_parts(g: _Graph, tensor: str) -> list[tuple[onnx.NodeProto, int]] | None:
    """(depthwise Conv, first output channel in ``tensor``) for a depthwise Conv or a Concat of them, else None."""
    node = g.producers.get(tensor)
    if _is_depthwise(g, node):
        return [(node, 0)]
    if node is None or node.op_type != "Concat" or _attr(node, "axis", 1) != 1:
        return None
    parts, offset = [], 0
    for i in node.input:
        conv = g.producers.get(i)
        if not _is_depthwise(g, conv) or g.only_consumer(i) is not node:
            return None
        parts.append((conv, offset))
        offset += g.inits[g.source(conv.input[1])].dims[0]
    return parts


def _pointwise_parts(g: _Graph, tensor: str) -> list[tuple[onnx.NodeProto, int]] | None:
    """(1x1 Conv, first input channel of ``tensor`` it reads) for a 1x1 Conv or a channel Split into 1x1 Convs."""
    node = g.only_consumer(tensor)
    if node is None:
        return None
    if node.op_type == "Conv":
        return [(node, 0)] if _is_pointwise(g, node) else None
    if node.op_type != "Split" or _attr(node, "axis", 0) != 1:
        return None
    parts, offset = [], 0
    for out in node.output:
        conv = g.only_consumer(out)
        if conv is None or conv.op_type != "Conv" or not _is_pointwise(g, conv):
            return None
        parts.append((conv, offset))
        offset += _in_channels(g, conv)
    return parts


def _is_pointwise(g: _Graph, node: onnx.NodeProto) -> bool:
    w = g.inits.get(g.source(node.input[1]))
    return w is not None and tuple(w.dims[2:]) == (1, 1)


def _in_channels(g: _Graph, conv: onnx.NodeProto) -> int:
    return g.inits[g.source(conv.input[1])].dims[1] * _attr(conv, "group", 1)


def equalize(fp32: onnx.ModelProto) -> tuple[onnx.ModelProto, Equalized]:
    """A copy of the FP32 graph with every exact depthwise -> ReLU -> pointwise pair equalized."""
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    g = _Graph(model)
    pairs = skipped = channels = 0
    seen: set[str] = set()
    for node in list(model.graph.node):
        if not _is_depthwise(g, node) or node.name in seen:
            continue
        out = node.output[0]
        concat = g.only_consumer(out)
        tensor = concat.output[0] if concat is not None and concat.op_type == "Concat" else out
        dw = _depthwise_parts(g, tensor)
        relu = g.only_consumer(tensor)
        pw = _pointwise_parts(g, relu.output[0]) if relu is not None and relu.op_type == "Relu" else None
        seen.update(conv.name for conv, _ in dw or [(node, 0)])
        convs = [c for c, _ in (dw or [])] + [c for c, _ in (pw or [])]
        if dw is None or pw is None or any(g.shared(c.input[1]) or len(c.input) > 2 and g.shared(c.input[2])
                                           for c in convs):  # fmt: skip
            skipped += 1
            continue
        _rescale(g, dw, pw)
        pairs += 1
        channels += sum(g.inits[g.source(c.input[1])].dims[0] for c, _ in dw)
    g.write_back()
    return model, Equalized(pairs, skipped, channels)


def _rescale(g: _Graph, dw: list[tuple[onnx.NodeProto, int]], pw: list[tuple[onnx.NodeProto, int]]) -> None:
    r1 = np.concatenate([np.abs(g.array(c.input[1])).reshape(len(g.array(c.input[1])), -1).max(1) for c, _ in dw])
    r2 = np.zeros_like(r1)
    for conv, start in pw:  # channel j of this conv's input is channel start + j of the tensor
        w = g.array(conv.input[1])
        groups, per_group = _attr(conv, "group", 1), w.shape[1]
        outs = len(w) // groups
        for k in range(groups):
            block = np.abs(w[k * outs : (k + 1) * outs, :, 0, 0]).max(0)
            lo = start + k * per_group
            r2[lo : lo + per_group] = np.maximum(r2[lo : lo + per_group], block)
    ok = (r1 > EPS) & (r2 > EPS)
    s = np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)), 1.0).astype(np.float32)
    for conv, start in dw:  # output channel i / s_i (weight and bias)
        w = g.array(conv.input[1])
        part = s[start : start + len(w)]
        w /= part.reshape(-1, 1, 1, 1)
        if len(conv.input) > 2 and conv.input[2]:
            g.array(conv.input[2])[:] /= part
    for conv, start in pw:  # input channel i * s_i
        w = g.array(conv.input[1])
        groups, per_group = _attr(conv, "group", 1), w.shape[1]
        outs = len(w) // groups
        for k in range(groups):
            lo = start + k * per_group
            w[k * outs : (k + 1) * outs] *= s[lo : lo + per_group].reshape(1, -1, 1, 1)


# ---------------------------------------------------------------- bias correction


@dataclass(frozen=True)
class InputMeans:
    """Per conv-input tensor: the channel means of its values on the calibration images, plain and clipped to
    its calibrated range ``[-amax, amax]``."""

    plain: Mapping[str, np.ndarray]
    clipped: Mapping[str, np.ndarray]


def input_means(fp32: onnx.ModelProto, tensors: Iterable[str], amax: Mapping[str, float], batches) -> InputMeans:
    """Run the FP32 graph over ``batches`` ({"input": array}) with ``tensors`` as extra outputs; channel means."""
    from .runtimes import ort_session

    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    names = [t for t in dict.fromkeys(tensors) if t not in {o.name for o in model.graph.output}]
    inputs = {i.name for i in model.graph.input}
    for t in names:
        if t not in inputs:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    session = ort_session(model.SerializeToString())
    wanted = [t for t in names if t not in inputs]
    sums: dict[str, np.ndarray] = {}
    clipped: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}  # values per channel: images x height x width of that tensor
    for batch in batches:
        outs = dict(zip(wanted, session.run(wanted, batch)))
        outs |= {t: batch[t] for t in names if t in inputs}
        for t in names:
            x = outs[t].astype(np.float64)
            a = float(amax.get(t, np.inf))
            sums[t] = sums.get(t, 0.0) + x.sum(axis=(0, 2, 3))
            clipped[t] = clipped.get(t, 0.0) + np.clip(x, -a, a).sum(axis=(0, 2, 3))
            counts[t] = counts.get(t, 0) + x.shape[0] * x.shape[2] * x.shape[3]
    return InputMeans({t: v / counts[t] for t, v in sums.items()}, {t: v / counts[t] for t, v in clipped.items()})


def bias_shift(w: np.ndarray, wq: np.ndarray, group: int, mean: np.ndarray, clipped_mean: np.ndarray) -> np.ndarray:
    """The mean output error per output channel of a conv: INT8 (``wq`` on clipped inputs) minus FP32."""
    outs, per_group = len(w), w.shape[1]
    shift = np.zeros(outs, np.float64)
    sums = np.asarray(w, np.float64).reshape(outs, per_group, -1).sum(2)
    qsums = np.asarray(wq, np.float64).reshape(outs, per_group, -1).sum(2)
    per_out = outs // group
    for k in range(group):
        rows = slice(k * per_out, (k + 1) * per_out)
        cols = slice(k * per_group, (k + 1) * per_group)
        shift[rows] = qsums[rows] @ clipped_mean[cols] - sums[rows] @ mean[cols]
    return shift
