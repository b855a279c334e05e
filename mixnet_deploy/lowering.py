"""Exact MixConv lowerings: how a :class:`~mixnet_deploy.model.MixedConv2d` reaches the ONNX graph.

``split`` (the default) keeps the design's graph: ``Split -> one Conv per group -> Concat``; an equal-split 1x1
stage's BN-folded biases go after the Concat as one ``Add`` (:func:`bias_after_concat`), as in timm's graph, where
OpenVINO fuses the stage into one GroupConvolution.
``merged`` rewrites every multi-group stage into ONE convolution, exactly:

* a mixed depthwise conv (kernels 3, 5, 7, ... per channel group, padding ``k // 2``) equals one
  depthwise conv whose smaller kernels are zero-padded, centred, to the largest kernel ``K``,
  with padding ``K // 2``: every output pixel sums the same products plus products with zeros;
* a split 1x1 conv whose groups all have the same input and output widths equals one
  ``Conv(group=G)`` whose weight is the groups' weights stacked along the output channels.

Both are exact up to float summation order (the tests check float64 to ~1e-12).

TensorFlow SAME padding (the ``tf_*`` variants) keeps the merged kernel exact. SAME pads a
``k``-kernel, stride-``s`` conv on an input of size ``n`` by ``t = (ceil(n/s) - 1) * s + k - n`` in
total (when ``k >= s``, so the ``max(., 0)`` never clips), ``t // 2`` before. Write
``t = k + D`` with ``D = (ceil(n/s) - 1) * s - n``, the same for every group of a stage; for odd
``k``, ``(k + D) // 2 = k // 2 + c`` with ``c = D // 2 + (D odd)`` (equivalently ``ceil(D/2)``),
again the same for every group. So output ``o`` of each group reads the window starting at
``o*s - k//2 - c``: the centred position shifted by one ``c`` for every kernel size, and the merged
kernel ``K`` padded SAME (``K // 2 + c`` before) reads its centred copy of every smaller kernel at
exactly that window: the output pixels sum the same products, plus products with zeros. For stride 2
on an even size ``c = -1`` (``k//2 - 1`` before, ``k//2`` after); at stride 1 ``c = 0``. The grouped-1x1
rewrite is part of ``merged`` rather than its own flag: on ONNX Runtime CPU it is about half of
the gain over the split graph (``docs/lowering.md``), and a separate flag would double the
lowerings to measure per runtime without a case where the mixed choice won. A split 1x1 with
unequal groups (none in MixNet-S/M/L) stays split.

Pure tensor math (:func:`merge_depthwise_kernels`, :func:`merge_grouped_pointwise`) is kept
apart from the module rewrite (:func:`lower`), which returns a copy and never changes its input.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Sequence

import onnx
import torch
from torch import nn

from .contract import MDCONV_CHOICES
from .model import MixedConv2d


def check_mdconv(mdconv: str) -> str:
    if mdconv not in MDCONV_CHOICES:
        raise ValueError(f"mdconv {mdconv!r}: expected one of {', '.join(MDCONV_CHOICES)}")
    return mdconv


# ------------------------------------------------------------------ pure tensor math


def pad_kernel_centred(weight: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a ``(O, I, k, k)`` kernel (odd ``k``) to ``(O, I, size, size)``, centred."""
    k = weight.shape[-1]
    if weight.shape[-2] != k or k % 2 == 0 or size % 2 == 0 or size < k:
        raise ValueError(f"kernel {tuple(weight.shape)}: expected a square odd kernel no larger than {size} (odd)")
    p = (size - k) // 2
    return torch.nn.functional.pad(weight, (p, p, p, p))


def merge_depthwise_kernels(
    weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One depthwise ``(C, 1, K, K)`` kernel (and bias) from per-group depthwise kernels.

    Each group's ``(c_i, 1, k_i, k_i)`` kernel is zero-padded, centred, to the largest ``K`` and
    the groups are concatenated along the channels in order. Used with padding ``K // 2`` and the
    groups' common stride, the result equals Split -> per-group conv (padding ``k_i // 2``) -> Concat.
    """
    if any(w.dim() != 4 or w.shape[1] != 1 for w in weights):
        raise ValueError(f"depthwise kernels must be (C, 1, k, k): got {[tuple(w.shape) for w in weights]}")
    size = max(int(w.shape[-1]) for w in weights)
    weight = torch.cat([pad_kernel_centred(w, size) for w in weights], dim=0)
    return weight, _cat_biases(weights, biases)


def merge_grouped_pointwise(
    weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One ``Conv(group=G)`` weight ``(G*o, i, 1, 1)`` (and bias) from G equal 1x1 group convs ``(o, i, 1, 1)``."""
    shapes = {tuple(w.shape) for w in weights}
    if len(shapes) != 1:
        raise ValueError(f"grouped 1x1 needs equal groups: got shapes {[tuple(w.shape) for w in weights]}")
    return torch.cat(list(weights), dim=0), _cat_biases(weights, biases)


def _cat_biases(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    if all(b is None for b in biases):
        return None
    return torch.cat(
        [b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases)],
        dim=0,
    )


# ------------------------------------------------------------------ module rewrite


def _centred_padding(conv: MixedConv2d, c: nn.Conv2d) -> bool:
    """Padding under which a centred, zero-padded kernel is exact: ``k // 2`` on both sides, or
    TensorFlow SAME (applied by ``conv`` itself, the Conv2d pads nothing) with ``k >= stride``."""
    k = c.kernel_size[0]
    if conv.same:
        return c.padding == (0, 0) and k >= max(c.stride)
    return c.padding == (k // 2,) * 2


def is_mixed_depthwise(conv: MixedConv2d) -> bool:
    """Several depthwise groups that one centred, padded kernel reproduces: odd square kernels, padding
    ``k // 2`` or SAME (see the module doc), no dilation, one common stride (anything else is left split)."""
    convs = list(conv.convs)
    return len(convs) > 1 and all(
        c.groups == c.in_channels == c.out_channels
        and c.kernel_size[0] == c.kernel_size[1]
        and c.kernel_size[0] % 2 == 1
        and _centred_padding(conv, c)
        and c.dilation == (1, 1)
        and c.stride == convs[0].stride
        for c in convs
    )


def is_equal_split_pointwise(conv: MixedConv2d) -> bool:
    convs = list(conv.convs)
    return (
        len(convs) > 1
        and all(
            c.kernel_size == (1, 1) and c.groups == 1 and c.padding == (0, 0) and c.stride == convs[0].stride
            for c in convs
        )
        and len(set(conv.in_splits)) == 1
        and len(set(conv.out_splits)) == 1
    )


def _single(merged: nn.Conv2d, like: MixedConv2d) -> MixedConv2d:
    """A one-group MixedConv2d (exports as a single Conv) holding ``merged``, padded as ``like`` pads.

    It stays a MixedConv2d so BN folding (which slices by ``out_splits``) still applies to it.
    """
    out = MixedConv2d(merged.in_channels, merged.out_channels, (1,), bias=False)
    out.convs = nn.ModuleList([merged])
    out.same, out.fixed_size = like.same, like.fixed_size
    return out.to(dtype=merged.weight.dtype, device=merged.weight.device)


def _conv_with(
    weight: torch.Tensor, bias: torch.Tensor | None, in_ch: int, stride, groups: int, same: bool = False
) -> nn.Conv2d:
    size = weight.shape[-1]
    conv = nn.Conv2d(
        in_ch, weight.shape[0], size, stride=stride, padding=0 if same else size // 2, groups=groups,
        bias=bias is not None,
    )  # fmt: skip
    conv = conv.to(dtype=weight.dtype, device=weight.device)
    conv.weight.copy_(weight)
    if bias is not None:
        conv.bias.copy_(bias)
    return conv


@torch.no_grad()
def merge_mixed_depthwise(conv: MixedConv2d) -> MixedConv2d:
    """Split -> depthwise conv per kernel size -> Concat as one depthwise conv (kernels padded, centred)."""
    weight, bias = merge_depthwise_kernels([c.weight for c in conv.convs], [c.bias for c in conv.convs])
    channels = weight.shape[0]
    return _single(_conv_with(weight, bias, channels, conv.convs[0].stride, channels, conv.same), conv)


@torch.no_grad()
def bias_after_concat(conv: MixedConv2d) -> MixedConv2d:
    """Split -> equal 1x1 convs with biases -> Concat as the same convs without biases -> Concat -> one Add.

    Exact (each output channel adds the same bias, after its sum instead of at the end of it). The BN-folded split
    graph otherwise carries each group's bias on its conv, where timm's export has bias-free convs and the BN after
    the Concat: OpenVINO fuses only the bias-free ``Split -> Conv 1x1 -> Concat`` into one GroupConvolution
    (docs/lowering.md, measured).
    """
    out = copy.deepcopy(conv)
    biases = [c.bias if c.bias is not None else c.weight.new_zeros(c.out_channels) for c in out.convs]
    for c in out.convs:
        c.bias = None
    out.shift = torch.cat(biases) if conv.shift is None else torch.cat(biases) + conv.shift
    return out


@torch.no_grad()
def merge_split_pointwise(conv: MixedConv2d) -> MixedConv2d:
    """Split -> equal 1x1 convs -> Concat as one Conv(group=G)."""
    weight, bias = merge_grouped_pointwise([c.weight for c in conv.convs], [c.bias for c in conv.convs])
    return _single(_conv_with(weight, bias, sum(conv.in_splits), conv.convs[0].stride, len(conv.convs)), conv)


def lower(model: nn.Module, mdconv: str, *, grouped_pointwise: bool = True) -> nn.Module:
    """A copy of ``model`` with its mixed convs lowered as ``mdconv`` says (``split``: the graph's own stages, the equal
    split 1x1 ones with their biases after the Concat, :func:`bias_after_concat`).

    Works on a folded or an unfolded model; the pipeline applies it after BN folding.
    ``grouped_pointwise=False`` merges only the depthwise stages (kept for the benchmark that
    justifies making the grouped-1x1 rewrite part of ``merged``; no CLI flag).
    """
    check_mdconv(mdconv)
    lowered = copy.deepcopy(model)
    if isinstance(lowered, MixedConv2d):
        return _lower_stage(lowered, mdconv, grouped_pointwise)
    for parent in list(lowered.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MixedConv2d):
                setattr(parent, name, _lower_stage(child, mdconv, grouped_pointwise))
    return lowered


def _lower_stage(conv: MixedConv2d, mdconv: str, grouped_pointwise: bool = True) -> MixedConv2d:
    if mdconv == "split":
        has_bias = any(c.bias is not None for c in conv.convs)
        return bias_after_concat(conv) if is_equal_split_pointwise(conv) and has_bias else conv
    if is_mixed_depthwise(conv):
        return merge_mixed_depthwise(conv)
    if grouped_pointwise and is_equal_split_pointwise(conv):
        return merge_split_pointwise(conv)
    return conv


# ------------------------------------------------------------------ what a graph costs


def graph_cost(model: onnx.ModelProto, batch: int = 1) -> dict:
    """Node count, operator histogram and multiply-accumulates of an ONNX graph at ``batch``.

    MACs are counted for ``Conv`` (output elements x input channels per group x kernel area),
    ``Gemm`` and ``MatMul`` (output elements x reduced dimension) from the shapes ONNX shape
    inference gives once the symbolic batch is fixed; the zeros of a padded kernel count as MACs
    (the runtime multiplies them). Everything else (activations, pools, adds) is not counted.
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = batch
    del fixed.graph.value_info[:]
    for value in fixed.graph.output:
        value.type.tensor_type.shape.dim[0].dim_value = batch
    inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=True)
    shapes = {init.name: tuple(init.dims) for init in inferred.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shapes[value.name] = tuple(d.dim_value for d in value.type.tensor_type.shape.dim)
    macs = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            weight = shapes[node.input[1]]
            macs += math.prod(out) * math.prod(weight[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            out = shapes[node.output[0]]
            a = shapes[node.input[0]]
            trans_a = any(att.name == "transA" and att.i for att in node.attribute)
            k = a[-2] if trans_a else a[-1]
            macs += math.prod(out) * k
    if any(v == 0 for node in inferred.graph.node if node.op_type == "Conv" for v in shapes[node.output[0]]):
        raise ValueError("shape inference left a Conv output shape unknown: cannot count MACs")
    return {
        "nodes": len(model.graph.node),
        "ops": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
        "macs": int(macs),
    }
