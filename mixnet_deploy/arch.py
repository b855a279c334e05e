"""MixNet architectures as data: variant tables decoded into frozen block specs (no torch here).

The tables are transcribed from the MixConv paper (Tan & Le, 2019) as timm defines
``mixnet_s``, ``mixnet_m`` and ``mixnet_l``; the other five of timm's MixNets are the same two
tables scaled or ported:

* ``xl`` / ``xxl`` (timm ``mixnet_xl`` / ``mixnet_xxl``): MixNet-M with channel multiplier 1.6 / 2.4
  and depth multiplier 1.2 / 1.3. Depth is scaled per stage as timm's ``_scale_stage_depth`` does
  with ``depth_trunc='round'`` (what ``_gen_mixnet_m`` passes): the stage's total repeat count is
  rounded, then distributed over its rows from the last row back (:func:`scale_stage_depth`).
* ``tf_s`` / ``tf_m`` / ``tf_l`` (timm ``tf_mixnet_*``, weights ported from TensorFlow): the networks
  of ``s`` / ``m`` / ``l`` with TensorFlow "SAME" padding (asymmetric at stride 2 on even sizes) and
  BatchNorm eps 1e-3. Their checkpoints have exactly the keys and shapes of ``mixnet_*``.

Everything is a tuple or a frozen dataclass, so building one variant can never change another (a
bug of several circulating implementations, which scale a shared class-level list in place for
MixNet-L).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMG_SIZE = 224  # input height = width wherever nothing else says (timm trains and evaluates MixNets at it)
MAX_IMG_SIZE = 2048  # the largest input height = width any command accepts (a 2048x2048 batch of 32: 1.6 GB)
BN_EPS_TORCH = 1e-5
BN_EPS_TF = 1e-3
PADDINGS = ("pytorch", "same")  # "pytorch": k // 2 on both sides; "same": TensorFlow SAME (timm pad_type='same')


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual (or depthwise-separable, when ``expand_ratio == 1``) block."""

    in_ch: int
    out_ch: int
    dw_kernels: tuple[int, ...]  # one depthwise kernel size per channel group
    exp_groups: int  # groups of the expand 1x1 ("a1.1" = 2)
    pw_groups: int  # groups of the project 1x1 ("p1.1" = 2)
    stride: int
    expand_ratio: int
    act: str  # "relu" or "swish"
    se_ratio: float  # relative to in_ch; 0 = no squeeze-excite

    @property
    def mid_ch(self) -> int:
        return self.in_ch * self.expand_ratio

    @property
    def has_expand(self) -> bool:
        return self.expand_ratio != 1

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch

    @property
    def se_ch(self) -> int:
        return int(round(self.in_ch * self.se_ratio))


@dataclass(frozen=True)
class VariantSpec:
    name: str  # "s", "m", "l", "xl", "xxl", "tf_s", "tf_m", "tf_l"
    stem_ch: int
    stages: tuple[tuple[BlockSpec, ...], ...]
    head_ch: int = 1536
    dropout: float = 0.2
    num_classes: int = 1000
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    padding: str = "pytorch"  # one of PADDINGS
    bn_eps: float = BN_EPS_TORCH
    pretrained: str | None = None  # timm's pretrained tag (Hugging Face hub "timm/<tag>"); None: timm ships none

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        return tuple(b for stage in self.stages for b in stage)

    @property
    def model_name(self) -> str:
        """timm's model name: ``mixnet_xl``, ``tf_mixnet_s``; also the artifacts' file stem."""
        return f"tf_mixnet_{self.name[3:]}" if self.name.startswith("tf_") else f"mixnet_{self.name}"


# Rows: in, out, dw kernels, expand groups, project groups, stride, expand ratio, act, SE ratio, repeats.
# A row with repeats > 1 is one block followed by (repeats - 1) copies with in = out, stride 1.
# Rows are grouped into stages as timm groups them (this fixes checkpoint key names).
_Row = tuple[int, int, tuple[int, ...], int, int, int, int, str, float, int]

_S_ROWS: tuple[tuple[_Row, ...], ...] = (
    ((16, 16, (3,), 1, 1, 1, 1, "relu", 0.0, 1),),
    ((16, 24, (3,), 2, 2, 2, 6, "relu", 0.0, 1), (24, 24, (3,), 2, 2, 1, 3, "relu", 0.0, 1)),
    ((24, 40, (3, 5, 7), 1, 1, 2, 6, "swish", 0.5, 1), (40, 40, (3, 5), 2, 2, 1, 6, "swish", 0.5, 3)),
    ((40, 80, (3, 5, 7), 1, 2, 2, 6, "swish", 0.25, 1), (80, 80, (3, 5), 1, 2, 1, 6, "swish", 0.25, 2)),
    ((80, 120, (3, 5, 7), 2, 2, 1, 6, "swish", 0.5, 1), (120, 120, (3, 5, 7, 9), 2, 2, 1, 3, "swish", 0.5, 2)),
    ((120, 200, (3, 5, 7, 9, 11), 1, 1, 2, 6, "swish", 0.5, 1), (200, 200, (3, 5, 7, 9), 1, 2, 1, 6, "swish", 0.5, 2)),
)

_M_ROWS: tuple[tuple[_Row, ...], ...] = (
    ((24, 24, (3,), 1, 1, 1, 1, "relu", 0.0, 1),),
    ((24, 32, (3, 5, 7), 2, 2, 2, 6, "relu", 0.0, 1), (32, 32, (3,), 2, 2, 1, 3, "relu", 0.0, 1)),
    ((32, 40, (3, 5, 7, 9), 1, 1, 2, 6, "swish", 0.5, 1), (40, 40, (3, 5), 2, 2, 1, 6, "swish", 0.5, 3)),
    ((40, 80, (3, 5, 7), 1, 1, 2, 6, "swish", 0.25, 1), (80, 80, (3, 5, 7, 9), 2, 2, 1, 6, "swish", 0.25, 3)),
    ((80, 120, (3,), 1, 1, 1, 6, "swish", 0.5, 1), (120, 120, (3, 5, 7, 9), 2, 2, 1, 3, "swish", 0.5, 3)),
    ((120, 200, (3, 5, 7, 9), 1, 1, 2, 6, "swish", 0.5, 1), (200, 200, (3, 5, 7, 9), 1, 2, 1, 6, "swish", 0.5, 3)),
)


def round_channels(channels: float, multiplier: float = 1.0, divisor: int = 8) -> int:
    """Scale and round to a multiple of ``divisor``, never more than 10% below the scaled value."""
    if multiplier == 1.0:
        return int(channels)
    scaled = channels * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


def scale_stage_depth(repeats: tuple[int, ...], depth_multiplier: float) -> tuple[int, ...]:
    """timm's ``_scale_stage_depth`` with ``depth_trunc='round'`` (as ``_gen_mixnet_m`` calls it).

    The stage's total repeat count is scaled and rounded (Python's round: half to even), then
    distributed over the rows in proportion, from the last row back, so the first row is the last
    to grow. ``(1, 3)`` x1.2 -> ``(1, 4)``; ``(1, 1)`` x1.3 -> ``(1, 2)``.
    """
    num_repeat = sum(repeats)
    num_scaled = max(1, round(num_repeat * depth_multiplier))
    scaled = []
    for r in reversed(repeats):
        rs = max(1, round(r / num_repeat * num_scaled))
        scaled.append(rs)
        num_repeat -= r
        num_scaled -= rs
    return tuple(reversed(scaled))


def _decode(
    rows: tuple[tuple[_Row, ...], ...], multiplier: float, depth_multiplier: float = 1.0
) -> tuple[tuple[BlockSpec, ...], ...]:
    stages = []
    for stage_rows in rows:
        blocks = []
        depths = scale_stage_depth(tuple(row[-1] for row in stage_rows), depth_multiplier)
        for (in_ch, out_ch, kernels, eg, pg, stride, exp, act, se, _), repeats in zip(stage_rows, depths):
            in_ch, out_ch = round_channels(in_ch, multiplier), round_channels(out_ch, multiplier)
            for i in range(repeats):
                blocks.append(
                    BlockSpec(
                        in_ch=in_ch if i == 0 else out_ch,
                        out_ch=out_ch,
                        dw_kernels=kernels,
                        exp_groups=eg,
                        pw_groups=pg,
                        stride=stride if i == 0 else 1,
                        expand_ratio=exp,
                        act=act,
                        se_ratio=se,
                    )
                )
        stages.append(tuple(blocks))
    return tuple(stages)


def _make(name: str, rows, stem_ch: int, multiplier: float, dropout: float, depth: float = 1.0, **extra) -> VariantSpec:
    return VariantSpec(
        name=name,
        stem_ch=round_channels(stem_ch, multiplier),
        stages=_decode(rows, multiplier, depth),
        dropout=dropout,
        **extra,
    )


def _tf_port(spec: VariantSpec, pretrained: str) -> VariantSpec:
    """timm's ``tf_mixnet_*``: the same network with TensorFlow SAME padding and BN eps 1e-3."""
    return replace(spec, name=f"tf_{spec.name}", padding="same", bn_eps=BN_EPS_TF, pretrained=pretrained)


_S = _make("s", _S_ROWS, 16, 1.0, 0.2, pretrained="mixnet_s.ft_in1k")
_M = _make("m", _M_ROWS, 24, 1.0, 0.25, pretrained="mixnet_m.ft_in1k")
_L = _make("l", _M_ROWS, 24, 1.3, 0.25, pretrained="mixnet_l.ft_in1k")

VARIANTS: dict[str, VariantSpec] = {
    "s": _S,
    "m": _M,
    "l": _L,
    "xl": _make("xl", _M_ROWS, 24, 1.6, 0.25, depth=1.2, pretrained="mixnet_xl.ra_in1k"),
    "xxl": _make("xxl", _M_ROWS, 24, 2.4, 0.25, depth=1.3),  # timm defines it without weights
    "tf_s": _tf_port(_S, "tf_mixnet_s.in1k"),
    "tf_m": _tf_port(_M, "tf_mixnet_m.in1k"),
    "tf_l": _tf_port(_L, "tf_mixnet_l.in1k"),
}

VARIANT_CHOICES = ", ".join(VARIANTS)


def normalize_variant(name: str) -> str:
    """'s', 'S', 'mixnet_s', 'mixnet-s' -> 's'; 'tf_mixnet_s', 'tf_s' -> 'tf_s'; anything else: ValueError."""
    key = str(name).strip().lower().replace("-", "_")
    tf = key.startswith("tf_")
    base = key.removeprefix("tf_").removeprefix("mixnet_")
    key = f"tf_{base}" if tf else base
    if key not in VARIANTS or base.startswith("tf_"):
        raise ValueError(
            f"unknown variant {name!r}: expected one of {VARIANT_CHOICES} "
            "(or timm's names: mixnet_s, ..., mixnet_xxl, tf_mixnet_s, tf_mixnet_m, tf_mixnet_l)"
        )
    return key


def get_variant(name: str, num_classes: int = 1000) -> VariantSpec:
    spec = VARIANTS[normalize_variant(name)]
    return spec if num_classes == spec.num_classes else replace(spec, num_classes=num_classes)


def split_channels(channels: int, groups: int) -> tuple[int, ...]:
    """timm's split: every group gets ``channels // groups``, the first also the remainder."""
    sizes = [channels // groups] * groups
    sizes[0] += channels - sum(sizes)
    return tuple(sizes)
