"""MixNet architectures as data: variant tables decoded into frozen block specs (no torch here).

The tables are transcribed from the MixConv paper (Tan & Le, 2019) as timm defines
``mixnet_s``, ``mixnet_m`` and ``mixnet_l``. Everything is a tuple or a frozen dataclass, so
building one variant can never change another (a bug of several circulating implementations,
which scale a shared class-level list in place for MixNet-L).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    name: str  # "s", "m", "l"
    stem_ch: int
    stages: tuple[tuple[BlockSpec, ...], ...]
    head_ch: int = 1536
    dropout: float = 0.2
    num_classes: int = 1000
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        return tuple(b for stage in self.stages for b in stage)

    @property
    def model_name(self) -> str:
        return f"mixnet_{self.name}"


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


def _decode(rows: tuple[tuple[_Row, ...], ...], multiplier: float) -> tuple[tuple[BlockSpec, ...], ...]:
    stages = []
    for stage_rows in rows:
        blocks = []
        for in_ch, out_ch, kernels, eg, pg, stride, exp, act, se, repeats in stage_rows:
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


def _make(name: str, rows, stem_ch: int, multiplier: float, dropout: float) -> VariantSpec:
    return VariantSpec(
        name=name,
        stem_ch=round_channels(stem_ch, multiplier),
        stages=_decode(rows, multiplier),
        dropout=dropout,
    )


VARIANTS: dict[str, VariantSpec] = {
    "s": _make("s", _S_ROWS, 16, 1.0, 0.2),
    "m": _make("m", _M_ROWS, 24, 1.0, 0.25),
    "l": _make("l", _M_ROWS, 24, 1.3, 0.25),
}

# Published parameter counts (timm definitions, BN affine parameters included).
PARAM_COUNTS = {"s": 4_134_606, "m": 5_014_382, "l": 7_329_252}


def normalize_variant(name: str) -> str:
    """'s', 'S', 'mixnet_s', 'mixnet-s' -> 's'; anything else raises ValueError naming the choices."""
    key = str(name).strip().lower().replace("-", "_")
    key = key.removeprefix("mixnet_")
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}: expected one of s, m, l (or mixnet_s, mixnet_m, mixnet_l)")
    return key


def get_variant(name: str, num_classes: int = 1000) -> VariantSpec:
    spec = VARIANTS[normalize_variant(name)]
    return spec if num_classes == spec.num_classes else replace(spec, num_classes=num_classes)


def split_channels(channels: int, groups: int) -> tuple[int, ...]:
    """timm's split: every group gets ``channels // groups``, the first also the remainder."""
    sizes = [channels // groups] * groups
    sizes[0] += channels - sum(sizes)
    return tuple(sizes)
