"""A trained-like MixNet checkpoint with outlier channels: the case ``--int8-exclude auto`` is for.

Trained networks have BN statistics that match natural images and a few channels whose BN gain is far
larger than the rest, compensated by the next convolution's weights. The float network computes the
same function; a per-tensor INT8 scale on the next convolution's input is set by the outliers and
rounds every other channel to a few levels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mixnet_deploy.data import Preprocess, crop_image
from mixnet_deploy.model import MixNet
from mixnet_deploy.weights import load_model, save_checkpoint

PLANTED = {1: [1, 51]}  # block 1 (ReLU, no SE, no skip): one outlier channel in each half of its projection conv
GAIN = 300.0


@torch.no_grad()
def trained_like(model: MixNet, images: np.ndarray, branch_gain: float = 0.1, prior: float = 2.0) -> MixNet:
    """Random weights made to look trained: residual branches damped (the last BN gain of a residual block
    times ``branch_gain``, as trained networks' are small), BN running statistics re-estimated on
    (normalized) natural images, and a classifier bias carrying class priors (a seeded random vector
    ``prior`` times the typical norm of the input-dependent part of the logits)."""
    for blk in model.blocks:
        if getattr(blk, "has_skip", False) and hasattr(blk, "bn3"):
            blk.bn3.weight *= branch_gain
            blk.bn3.bias *= branch_gain
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    model.train()
    model(x)
    model.eval()
    for bn in bns:
        bn.momentum = 0.1
        bn.num_batches_tracked.zero_()
    logits = model(x)
    spread = (logits - logits.mean(0)).norm(dim=1).mean()
    direction = torch.randn(logits.shape[1], generator=torch.Generator().manual_seed(0))
    model.classifier.bias += prior * spread * direction / direction.norm()
    return model


@torch.no_grad()
def plant_outliers(model: MixNet, block: int, channels: list[int], gain: float) -> MixNet:
    """Multiply ``channels`` of block ``block``'s bn2 (the BN before its projection conv) by ``gain`` and
    divide the projection conv's weights reading them by ``gain``. Exact for a ReLU block without SE
    (ReLU is positively homogeneous), so the float network is unchanged up to rounding."""
    blk = model.blocks[block]
    if not isinstance(blk.act2, torch.nn.ReLU) or not isinstance(blk.se, torch.nn.Identity):
        raise ValueError(f"block {block}: outliers are planted exactly only in ReLU blocks without SE")
    starts = np.cumsum((0, *blk.conv_pwl.in_splits))
    for c in channels:
        blk.bn2.weight[c] *= gain
        blk.bn2.bias[c] *= gain
        group = int(np.searchsorted(starts, c, side="right") - 1)
        blk.conv_pwl.convs[group].weight[:, c - starts[group]] /= gain
    return model


def make_case(out: Path, size: int) -> dict:
    """The outlier case on disk: a calibration folder (every other scikit-image photo, two variants each),
    the trained-like MixNet-S without and with outliers (checkpoints and models), held-out inputs (the others)."""
    from test_precision import photos, variants

    calib = Path(out) / "calib"
    calib.mkdir(parents=True)
    for path in photos()[0::2]:
        for i, img in enumerate(variants(path)[:2]):
            img.save(calib / f"{path.stem}_{i}.png")
    pre = Preprocess(size=size)
    images = pre.normalize(np.stack([crop_image(v, pre) for p in photos()[0::2] for v in variants(p)]))
    clean = trained_like(load_model("s")[0], images)
    planted = trained_like(load_model("s")[0], images)
    for block, channels in PLANTED.items():
        plant_outliers(planted, block, channels, GAIN)
    return {
        "calib": calib,
        "held": pre.normalize(np.stack([crop_image(v, pre) for p in photos()[1::2] for v in variants(p)])),
        "clean": save_checkpoint(clean, Path(out) / "clean.safetensors"),
        "planted": save_checkpoint(planted, Path(out) / "planted.safetensors"),
        "models": (clean, planted),
    }
