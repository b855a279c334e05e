"""BatchNorm folding: pure math on tensors, then a module rewrite that uses it.

Every BN folds into the conv before it. After a split/concat stage (a
:class:`~mixnet_deploy.model.MixedConv2d` with several groups) the BN's scale and shift are
sliced by each group's output channels, so no BN survives anywhere in the exported graph.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .model import MixedConv2d, conv_bn_pairs


def fuse_conv_bn_weights(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
    bn_weight: torch.Tensor,
    bn_bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(conv weight, conv bias) such that ``conv'(x) == bn(conv(x))`` in eval mode."""
    scale = bn_weight * torch.rsqrt(running_var + eps)
    if bias is None:
        bias = torch.zeros_like(running_mean)
    fused_w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    fused_b = (bias - running_mean) * scale + bn_bias
    return fused_w, fused_b


@torch.no_grad()
def fold_conv_bn(conv: MixedConv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into every group conv of ``conv`` in place, slicing the BN per group."""
    start = 0
    for c, width in zip(conv.convs, conv.out_splits):
        sl = slice(start, start + width)
        w, b = fuse_conv_bn_weights(
            c.weight, c.bias, bn.running_mean[sl], bn.running_var[sl], bn.eps, bn.weight[sl], bn.bias[sl]
        )
        c.weight = nn.Parameter(w)
        c.bias = nn.Parameter(b)
        start += width


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BatchNorm folded into its conv and replaced by Identity.

    Refuses a model in training mode (folding uses running statistics, as inference does).
    """
    if model.training:
        raise ValueError("fold_bn needs an eval-mode model (call model.eval() first): BN folding uses running stats")
    folded = copy.deepcopy(model)
    for parent, conv_name, bn_name in list(conv_bn_pairs(folded)):
        bn = getattr(parent, bn_name)
        if isinstance(bn, nn.BatchNorm2d):
            fold_conv_bn(getattr(parent, conv_name), bn)
            setattr(parent, bn_name, nn.Identity())
    return folded
