"""MixNet modules built from the frozen specs of :mod:`mixnet_deploy.arch`.

Submodule names are API: BN folding, the graph rewrites and checkpoint conversion find layers
by these names (timm's vocabulary: ``conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3``). Every
conv that a BatchNorm follows is a :class:`MixedConv2d`, whose ``convs`` hold one conv per
channel group, so the same code folds a plain conv, a split 1x1 and a mixed depthwise conv.

Padding follows the variant: PyTorch style (``k // 2`` on both sides) or TensorFlow "SAME" for
the ``tf_*`` ports, which pads ``(k - 2) // 2`` before and ``k // 2`` after a stride-2 conv on an
even input (timm's ``Conv2dSame``). SAME pads depend on the input size; :func:`fix_input_size`
makes them constants for one size, so an exported graph has static pads and no shape arithmetic.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .arch import BN_EPS_TORCH, DEFAULT_IMG_SIZE, BlockSpec, VariantSpec, get_variant, split_channels


def make_act(name: str) -> nn.Module:
    """A fresh activation module for every use (observers and hooks need distinct instances)."""
    if name == "relu":
        return nn.ReLU()
    if name == "swish":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}: expected 'relu' or 'swish'")


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding of one dimension, (before, after), as timm's ``pad_same`` computes it."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class MixedConv2d(nn.Module):
    """Split channels into groups, one conv per group (own kernel size), concatenate.

    With one group this is a plain conv (no Split/Concat in the exported graph). With
    ``depthwise=True`` every group's conv is depthwise. ``padding="pytorch"``: ``k // 2`` on both
    sides. ``padding="same"`` (TensorFlow SAME): the same at stride 1 (odd kernels); at stride 2 the
    pads are computed from the input size (``same``) and applied before each group's conv, which
    then has padding 0; ``fixed_size`` (set by :func:`fix_input_size`) makes them constants.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernels: tuple[int, ...],
        stride: int = 1,
        depthwise: bool = False,
        bias: bool = False,
        padding: str = "pytorch",
    ):
        super().__init__()
        if padding not in ("pytorch", "same"):
            raise ValueError(f"padding {padding!r}: expected 'pytorch' or 'same'")
        self.same = padding == "same" and stride > 1  # pads depend on the input size
        self.fixed_size: tuple[int, int] | None = None  # (H, W) the SAME pads are frozen for
        self.in_splits = split_channels(in_ch, len(kernels))
        self.out_splits = split_channels(out_ch, len(kernels))
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, k, stride=stride, padding=0 if self.same else k // 2, groups=o if depthwise else 1,
                      bias=bias)
            for i, o, k in zip(self.in_splits, self.out_splits, kernels)
        )  # fmt: skip
        # per-channel bias added once after the Concat (lowering.bias_after_concat); None: biases on the convs
        self.register_buffer("shift", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self._conv(self.convs[0], x)
        parts = torch.split(x, list(self.in_splits), dim=1)
        out = torch.cat([self._conv(conv, p) for conv, p in zip(self.convs, parts)], dim=1)
        return out if self.shift is None else out + self.shift.reshape(1, -1, 1, 1)

    def _conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        if not self.same:
            return conv(x)
        if torch.onnx.is_in_onnx_export():
            if self.fixed_size is None:
                raise RuntimeError("SAME padding exported without fix_input_size(): pads would be computed at run time")
            bias = conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)
            pads = self.pads(conv, self.fixed_size)
            return _ExportSameConv.apply(x, conv.weight, bias, conv.stride, conv.groups, pads)
        return conv(F.pad(x, self.pads(conv, (int(x.shape[-2]), int(x.shape[-1])))))

    @staticmethod
    def pads(conv: nn.Conv2d, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """SAME pads of ``conv`` for an input of ``size`` = (H, W), in F.pad's order (left, right, top, bottom)."""
        top, bottom = same_pads(size[0], conv.kernel_size[0], conv.stride[0])
        left, right = same_pads(size[1], conv.kernel_size[1], conv.stride[1])
        return left, right, top, bottom


class _ExportSameConv(torch.autograd.Function):
    """``conv(pad(x))`` with constant pads that exports as ONE ONNX ``Conv`` with asymmetric ``pads``.

    Traced plainly, ``F.pad`` becomes a Pad node fed by a shape-arithmetic subgraph that the exporter
    does not fold; ONNX's Conv takes ``pads = [top, left, bottom, right]`` itself, so no Pad is needed.
    Used only while exporting (see :meth:`MixedConv2d._conv`); ``bias`` must be a tensor.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride: tuple[int, int], groups: int, pads: tuple[int, int, int, int]):
        return F.conv2d(F.pad(x, pads), weight, bias, stride, 0, 1, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, stride, groups, pads):
        left, right, top, bottom = pads
        kernel = weight.type().sizes()[-2:]
        return g.op(
            "Conv", x, weight, bias,
            kernel_shape_i=list(kernel), strides_i=list(stride), pads_i=[top, left, bottom, right],
            dilations_i=[1, 1], group_i=groups,
        )  # fmt: skip


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, act: str):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_act(act)
        self.conv_expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.conv_expand(self.act(self.conv_reduce(s)))
        return x * torch.sigmoid(s)


class DepthwiseSeparable(nn.Module):
    """Block with expand ratio 1: depthwise -> BN -> act -> (SE) -> 1x1 -> BN (-> + input)."""

    conv_bn_pairs = (("conv_dw", "bn1"), ("conv_pw", "bn2"))

    def __init__(self, spec: BlockSpec, padding: str = "pytorch", bn_eps: float = BN_EPS_TORCH):
        super().__init__()
        self.has_skip = spec.has_skip
        self.conv_dw = MixedConv2d(
            spec.in_ch, spec.in_ch, spec.dw_kernels, spec.stride, depthwise=True, padding=padding
        )
        self.bn1 = nn.BatchNorm2d(spec.in_ch, eps=bn_eps)
        self.act1 = make_act(spec.act)
        self.se = SqueezeExcite(spec.in_ch, spec.se_ch, spec.act) if spec.se_ratio > 0 else nn.Identity()
        self.conv_pw = MixedConv2d(spec.in_ch, spec.out_ch, (1,) * spec.pw_groups)
        self.bn2 = nn.BatchNorm2d(spec.out_ch, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act1(self.bn1(self.conv_dw(x))))
        y = self.bn2(self.conv_pw(y))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    """1x1 expand -> BN -> act -> mixed depthwise -> BN -> act -> (SE) -> 1x1 project -> BN (-> + input)."""

    conv_bn_pairs = (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))

    def __init__(self, spec: BlockSpec, padding: str = "pytorch", bn_eps: float = BN_EPS_TORCH):
        super().__init__()
        mid = spec.mid_ch
        self.has_skip = spec.has_skip
        self.conv_pw = MixedConv2d(spec.in_ch, mid, (1,) * spec.exp_groups)
        self.bn1 = nn.BatchNorm2d(mid, eps=bn_eps)
        self.act1 = make_act(spec.act)
        self.conv_dw = MixedConv2d(mid, mid, spec.dw_kernels, spec.stride, depthwise=True, padding=padding)
        self.bn2 = nn.BatchNorm2d(mid, eps=bn_eps)
        self.act2 = make_act(spec.act)
        self.se = SqueezeExcite(mid, spec.se_ch, spec.act) if spec.se_ratio > 0 else nn.Identity()
        self.conv_pwl = MixedConv2d(mid, spec.out_ch, (1,) * spec.pw_groups)
        self.bn3 = nn.BatchNorm2d(spec.out_ch, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.se(self.act2(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


class ConvBnAct(nn.Module):
    conv_bn_pairs = (("conv", "bn"),)

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, stride: int, padding: str = "pytorch", bn_eps: float = BN_EPS_TORCH
    ):
        super().__init__()
        self.conv = MixedConv2d(in_ch, out_ch, (kernel,), stride, padding=padding)
        self.bn = nn.BatchNorm2d(out_ch, eps=bn_eps)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def make_block(spec: BlockSpec, padding: str = "pytorch", bn_eps: float = BN_EPS_TORCH) -> nn.Module:
    block = InvertedResidual if spec.has_expand else DepthwiseSeparable
    return block(spec, padding, bn_eps)


class MixNet(nn.Module):
    """Any MixNet of :data:`~mixnet_deploy.arch.VARIANTS`. Global average pooling: any input size works."""

    def __init__(self, spec: VariantSpec):
        super().__init__()
        self.spec = spec
        style = {"padding": spec.padding, "bn_eps": spec.bn_eps}
        self.stem = ConvBnAct(3, spec.stem_ch, 3, 2, **style)
        self.blocks = nn.Sequential(*(make_block(b, **style) for b in spec.blocks))
        self.head = ConvBnAct(spec.blocks[-1].out_ch, spec.head_ch, 1, 1, **style)
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(spec.head_ch, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x))


def build_model(variant: str | VariantSpec, num_classes: int = 1000) -> MixNet:
    """An eval-mode MixNet with PyTorch's default init (load weights or call :func:`init_random`)."""
    spec = variant if isinstance(variant, VariantSpec) else get_variant(variant, num_classes)
    return MixNet(spec).eval()


@torch.no_grad()
def fix_input_size(model: nn.Module, img_size: int) -> nn.Module:
    """A copy of ``model`` whose SAME-padded convs pad by constants computed for ``img_size`` inputs.

    One forward pass at that size records every such conv's input height and width. A model
    without SAME padding comes back as an unchanged copy. Export traces the copy, so the graph
    holds constant pads (no Shape -> arithmetic -> Pad subgraph).
    """
    fixed = copy.deepcopy(model)
    same = [m for m in fixed.modules() if isinstance(m, MixedConv2d) and m.same]
    if not same:
        return fixed
    sizes: dict[int, tuple[int, int]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        sizes.setdefault(id(module), (int(args[0].shape[-2]), int(args[0].shape[-1])))

    hooks = [m.register_forward_pre_hook(record) for m in same]
    try:
        param = next(fixed.parameters())
        fixed(torch.zeros(1, 3, img_size, img_size, dtype=param.dtype, device=param.device))
    finally:
        for hook in hooks:
            hook.remove()
    for m in same:
        m.fixed_size = sizes[id(m)]
    return fixed


def conv_bn_pairs(model: nn.Module):
    """Yield (parent module, conv attribute name, bn attribute name) for every conv followed by a BN."""
    for module in model.modules():
        for conv_name, bn_name in getattr(module, "conv_bn_pairs", ()):
            yield module, conv_name, bn_name


@torch.no_grad()
def init_random(model: MixNet, seed: int = 0, images: torch.Tensor | None = None) -> MixNet:
    """Deterministic random weights whose activations are of normal size.

    Convs get Kaiming-normal weights, BN affine parameters are randomized around 1/0, then the
    BN running statistics are measured (cumulative average) on ``images`` (normalized float NCHW) and their mirror
    images, else on seeded noise images. PyTorch's default init with untouched BN statistics gives logits around
    1e-8, which makes every numerical comparison (FP16, INT8, parity) meaningless; statistics measured on white
    noise leave activations far from normal size on photos (MixNet-S: logits in the hundreds, FP16 min cosine
    0.9992 on the built-in photos); measured on smooth colour fields (``mixnet-export``'s random weights) they give
    logits of a few units on photos, as a trained net has.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.01)
        elif isinstance(m, nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.in_features**0.5)
            m.bias.zero_()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen) * 0.1)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    if images is not None:
        model(torch.cat([images, images.flip(3)]))
    else:
        for _ in range(2):
            model(torch.randn(4, 3, DEFAULT_IMG_SIZE, DEFAULT_IMG_SIZE, generator=gen))
    model.eval()
    for bn in bns:
        bn.momentum = 0.1
        bn.num_batches_tracked.zero_()
    return model
