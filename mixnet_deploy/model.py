"""MixNet modules built from the frozen specs of :mod:`mixnet_deploy.arch`.

Submodule names are API: BN folding, the graph rewrites and checkpoint conversion find layers
by these names (timm's vocabulary: ``conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3``). Every
conv that a BatchNorm follows is a :class:`MixedConv2d`, whose ``convs`` hold one conv per
channel group, so the same code folds a plain conv, a split 1x1 and a mixed depthwise conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arch import BlockSpec, VariantSpec, get_variant, split_channels


def make_act(name: str) -> nn.Module:
    """A fresh activation module for every use (observers and hooks need distinct instances)."""
    if name == "relu":
        return nn.ReLU()
    if name == "swish":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}: expected 'relu' or 'swish'")


class MixedConv2d(nn.Module):
    """Split channels into groups, one conv per group (own kernel size), concatenate.

    With one group this is a plain conv (no Split/Concat in the exported graph). With
    ``depthwise=True`` every group's conv is depthwise. Padding is ``k // 2`` (PyTorch style).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernels: tuple[int, ...],
        stride: int = 1,
        depthwise: bool = False,
        bias: bool = False,
    ):
        super().__init__()
        self.in_splits = split_channels(in_ch, len(kernels))
        self.out_splits = split_channels(out_ch, len(kernels))
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, k, stride=stride, padding=k // 2, groups=o if depthwise else 1, bias=bias)
            for i, o, k in zip(self.in_splits, self.out_splits, kernels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        parts = torch.split(x, list(self.in_splits), dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)


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

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.has_skip = spec.has_skip
        self.conv_dw = MixedConv2d(spec.in_ch, spec.in_ch, spec.dw_kernels, spec.stride, depthwise=True)
        self.bn1 = nn.BatchNorm2d(spec.in_ch)
        self.act1 = make_act(spec.act)
        self.se = SqueezeExcite(spec.in_ch, spec.se_ch, spec.act) if spec.se_ratio > 0 else nn.Identity()
        self.conv_pw = MixedConv2d(spec.in_ch, spec.out_ch, (1,) * spec.pw_groups)
        self.bn2 = nn.BatchNorm2d(spec.out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act1(self.bn1(self.conv_dw(x))))
        y = self.bn2(self.conv_pw(y))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    """1x1 expand -> BN -> act -> mixed depthwise -> BN -> act -> (SE) -> 1x1 project -> BN (-> + input)."""

    conv_bn_pairs = (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))

    def __init__(self, spec: BlockSpec):
        super().__init__()
        mid = spec.mid_ch
        self.has_skip = spec.has_skip
        self.conv_pw = MixedConv2d(spec.in_ch, mid, (1,) * spec.exp_groups)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = make_act(spec.act)
        self.conv_dw = MixedConv2d(mid, mid, spec.dw_kernels, spec.stride, depthwise=True)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = make_act(spec.act)
        self.se = SqueezeExcite(mid, spec.se_ch, spec.act) if spec.se_ratio > 0 else nn.Identity()
        self.conv_pwl = MixedConv2d(mid, spec.out_ch, (1,) * spec.pw_groups)
        self.bn3 = nn.BatchNorm2d(spec.out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.se(self.act2(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


class ConvBnAct(nn.Module):
    conv_bn_pairs = (("conv", "bn"),)

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int):
        super().__init__()
        self.conv = MixedConv2d(in_ch, out_ch, (kernel,), stride)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def make_block(spec: BlockSpec) -> nn.Module:
    return InvertedResidual(spec) if spec.has_expand else DepthwiseSeparable(spec)


class MixNet(nn.Module):
    """MixNet-S/M/L. Global average pooling: any input size that is a multiple of 32 works."""

    def __init__(self, spec: VariantSpec):
        super().__init__()
        self.spec = spec
        self.stem = ConvBnAct(3, spec.stem_ch, 3, 2)
        self.blocks = nn.Sequential(*(make_block(b) for b in spec.blocks))
        self.head = ConvBnAct(spec.blocks[-1].out_ch, spec.head_ch, 1, 1)
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


def conv_bn_pairs(model: nn.Module):
    """Yield (parent module, conv attribute name, bn attribute name) for every conv followed by a BN."""
    for module in model.modules():
        for conv_name, bn_name in getattr(module, "conv_bn_pairs", ()):
            yield module, conv_name, bn_name


@torch.no_grad()
def init_random(model: MixNet, seed: int = 0) -> MixNet:
    """Deterministic random weights whose activations are of normal size.

    Convs get Kaiming-normal weights, BN affine parameters are randomized around 1/0, then the
    BN running statistics are measured on seeded random images (cumulative average).
    PyTorch's default init with untouched BN statistics gives logits around 1e-8, which makes
    every numerical comparison (FP16, INT8, parity) meaningless.
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
    for _ in range(2):
        model(torch.randn(4, 3, 224, 224, generator=gen))
    model.eval()
    for bn in bns:
        bn.momentum = 0.1
        bn.num_batches_tracked.zero_()
    return model
